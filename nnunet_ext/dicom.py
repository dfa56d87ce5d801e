"""DICOM series in, NIfTI out: the input side of ``nnunet-ext detect`` and the whole of ``nnunet-ext dicom2nifti``.

A series is found by its Series Instance UID (GDCM's scan of one folder, not recursive); its slices are ordered by
their position along the slice normal (Image Position Patient projected on the normal from Image Orientation
Patient), never by file name; SimpleITK applies Rescale Slope/Intercept, so CT values come out in HU. The image
keeps the series' geometry (spacing, origin, direction) in ITK's LPS patient coordinates, and a NIfTI written from
it keeps that geometry too.

Slices at the same position are dropped (the first file is kept) and reported; gaps and uneven steps between
positions are reported with the positions, because ITK then assumes the mean step for every slice and anatomy
beyond the gap is displaced. Slices of another orientation are refused by name. A gantry tilt (slices that step
sideways, not along their normal) would be read by ITK as a sheared volume; it is resampled onto a grid orthogonal
to the slices, with a warning naming the angle, as dcm2niix does. An Enhanced CT (the whole series as frames of one
file) is read as one volume, its frames ordered and placed by their per-frame functional groups.

Nothing is dropped silently: a file of the folder that looks like DICOM (a DICOM preamble, or a .dcm/.ima name)
but cannot be read stops the run with its name (``skip_unreadable`` turns that into a warning that names it), a
slice of another size is named with its rows x columns, and a tie between two equally large series asks for
``--series-uid``. NIfTI files are written into a hidden folder beside the target and renamed when complete, so no
file that an image reader or nnU-Net's file listing picks up is ever incomplete; SIGTERM removes the partial file
as Ctrl-C does.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

__all__ = ["DicomError", "OutputFolderError", "DicomSeries", "SeriesFiles", "DicomVolume", "list_series", "unreadable_files",
           "inspect_series", "read_dicom_series", "find_dicom_cases", "dicom_to_nifti", "case_name",
           "require_writable_folder", "stop_signals_raise", "write_image_atomically"]

TAG_POSITION = "0020|0032"
TAG_ORIENTATION = "0020|0037"
TAG_DESCRIPTION = "0008|103e"
TAG_MODALITY = "0008|0060"
TAG_ROWS = "0028|0010"
TAG_COLUMNS = "0028|0011"
TAG_FRAMES = "0028|0008"
# Steps between neighbouring slices that differ from the median step by more than this fraction are reported.
SPACING_TOLERANCE = 0.1
# Two slices closer than this (mm) along the normal are one position stored twice.
DUPLICATE_DISTANCE_MM = 1e-3
# Direction cosines that differ by less than this are one orientation (headers store them rounded).
ORIENTATION_TOLERANCE = 1e-3
# Slices that drift sideways, over the whole series, by less than this fraction of a pixel are not tilted.
TILT_TOLERANCE = 0.1
NIFTI_ENDING = ".nii.gz"
# A file with these endings, or with the "DICM" marker after the 128-byte preamble, is meant to be DICOM.
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
DICOM_MARKER_OFFSET, DICOM_MARKER = 128, b"DICM"
# DICOMDIR, the media's index, is DICOM but holds no image
NOT_AN_IMAGE = ("DICOMDIR",)
# ITK warnings that say nothing the caller does not handle: a folder without a series (list_series returns none),
# uneven slice positions (_arrange_slices reports them with the positions)
HARMLESS_ITK_WARNINGS = ("No Series were found", "Non uniform sampling or missing slices detected")


class DicomError(ValueError):
    """A folder without a usable DICOM series, or a series that cannot be read; the message names the fix."""


class OutputFolderError(RuntimeError):
    """An output folder that cannot be created or written to."""


@dataclass
class DicomSeries:
    """One series of a folder: its UID and its files, not yet ordered."""

    uid: str
    files: list[str]
    description: str = ""


@dataclass
class SeriesFiles:
    """The series ``read_dicom_series`` would read: its files in slice order, and what was noticed on the way.

    ``slice_step`` is the mean vector (mm, LPS) from one slice to the next, None when the headers do not give it;
    ``frame_order`` is set for one multi-frame file (Enhanced CT): its frames in position order.
    """

    series: DicomSeries
    files: list[str]
    notes: list[str]
    slice_step: np.ndarray | None = None
    frame_order: list[int] | None = None
    first_position: np.ndarray | None = None

    @property
    def num_slices(self) -> int:
        return len(self.frame_order) if self.frame_order is not None else len(self.files)


@dataclass
class DicomVolume:
    """A series read into one 3D image (HU for CT), with what was noticed on the way."""

    image: sitk.Image
    folder: Path
    series_uid: str
    num_files: int
    modality: str = ""
    warnings: list[str] = field(default_factory=list)


def list_series(folder: str | os.PathLike) -> list[DicomSeries]:
    """The DICOM series stored directly in ``folder`` (subfolders are not searched), largest first."""
    folder = str(folder)
    reader = sitk.ImageSeriesReader()
    series = []
    with _quiet_itk():  # ITK warns on stderr for every folder without a series; the caller decides what that means
        uids = reader.GetGDCMSeriesIDs(folder)
    for uid in uids:
        files = list(reader.GetGDCMSeriesFileNames(folder, uid))
        series.append(DicomSeries(uid=uid, files=files, description=_header(files[0]).get(TAG_DESCRIPTION, "")))
    return sorted(series, key=lambda s: -len(s.files))


def find_dicom_cases(path: str | os.PathLike) -> list[tuple[str, Path]]:
    """``(case name, series folder)`` for ``path`` itself if it holds a series, else for each subfolder that does.

    Raises DicomError if neither ``path`` nor any of its subfolders holds a DICOM series, if ``path`` holds DICOM
    files beside case folders (a stray file would otherwise hide every case), or if two folders give one case name.
    """
    path = Path(path)
    if not path.is_dir():
        raise DicomError(f"{path} is not a folder; give the folder that holds the DICOM files of a series "
                         "(or a folder of such folders, one per case).")
    own = list_series(path)
    cases = [(case_name(sub), sub) for sub in sorted(p for p in path.iterdir() if p.is_dir()) if list_series(sub)]
    if own and cases:
        stray = [Path(f).name for s in own for f in s.files]
        raise DicomError(f"{path} holds DICOM file(s) of its own ({_names(stray)}) beside case folders with DICOM "
                         f"series ({_names([folder.name for _, folder in cases])}). Move the file(s) into their "
                         "case's folder (or out of this folder), or give one series folder.")
    if own:
        return [(case_name(path), path)]
    if not cases:
        raise DicomError(f"No DICOM series in {path} or its subfolders. Give the folder that holds one series' "
                         ".dcm files, or a folder with one such folder per case.")
    _refuse_shared_names(cases)
    return cases


def case_name(folder: Path) -> str:
    """A file-system-safe case name from a series folder's name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", folder.resolve().name).strip("._") or "case"


def _refuse_shared_names(cases: list[tuple[str, Path]]) -> None:
    """Two folders whose names give one case name (``Müller``, ``Möller`` -> ``M_ller``; ``A``, ``a`` on a file system
    that ignores case) would write one output over the other."""
    folders: dict[str, list[Path]] = {}
    for name, folder in cases:
        folders.setdefault(name.casefold(), []).append(folder)
    shared = [group for group in folders.values() if len(group) > 1]
    if shared:
        clashes = "; ".join(f"{', '.join(f.name for f in group)} -> {case_name(group[0])}" for group in shared)
        raise DicomError(f"Case folders whose names give the same case name: {clashes}. Nothing was written. Rename "
                         "the folders so that their names differ in letters A-Z, digits, '.', '_' or '-'.")


def unreadable_files(folder: str | os.PathLike, series: list[DicomSeries]) -> list[Path]:
    """Files of ``folder`` meant to be DICOM (a DICOM preamble, or a .dcm/.ima name) that are in none of ``series``
    because GDCM could not read them (truncated, corrupt): GDCM leaves them out without a word."""
    listed = {os.path.realpath(f) for s in series for f in s.files}
    found = []
    for file in sorted(Path(folder).iterdir()):
        if not file.is_file() or file.name in NOT_AN_IMAGE or os.path.realpath(file) in listed:
            continue
        if file.suffix.lower() in DICOM_SUFFIXES or _has_dicom_marker(file):
            found.append(file)
    return found


def _has_dicom_marker(file: Path) -> bool:
    with open(file, "rb") as handle:
        handle.seek(DICOM_MARKER_OFFSET)
        return handle.read(len(DICOM_MARKER)) == DICOM_MARKER


def inspect_series(folder: str | os.PathLike, series_uid: str | None = None, skip_unreadable: bool = False,
                   log: Callable[[str], None] = print) -> SeriesFiles:
    """Choose a series of ``folder`` and check its files from their headers, without reading any pixel data.

    Args:
        folder: the folder that holds the series' files.
        series_uid: the Series Instance UID to read; None takes the only series, or the one with the most slices
            when there are several (``log`` says which and lists the others; a tie is an error).
        skip_unreadable: leave out files meant to be DICOM that cannot be read, with a note naming each; by
            default they are an error.
        log: where messages about the choice of series and the slice checks go.

    Raises:
        DicomError: no DICOM series in ``folder``, ``series_uid`` is not one of its series, two series tie for the
            largest, a file cannot be read, slices differ in size or orientation, or the frames of a multi-frame
            file cannot be placed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DicomError(f"DICOM folder {folder} does not exist.")
    series = list_series(folder)
    unreadable = unreadable_files(folder, series)
    if unreadable and not skip_unreadable:
        raise DicomError(f"{len(unreadable)} file(s) of {folder} cannot be read as DICOM (truncated or corrupt): "
                         f"{_names([f.name for f in unreadable])}. Copy them again from the source, move them out "
                         f"of the folder, or pass --skip-unreadable to go on without them.")
    if not series:
        raise DicomError(f"No DICOM series in {folder}. Give the folder that holds the series' .dcm files "
                         "(subfolders are not searched).")
    chosen = _choose_series(folder, series, series_uid)
    skipped = [f"skipped unreadable file {file.name} (truncated or corrupt)" for file in unreadable]
    choice = []
    if series_uid is None and len(series) > 1:
        log(f"{folder} holds {len(series)} series; using the largest, {_uid(chosen.uid)} ({len(chosen.files)} "
            f"files). Others: {_describe(series[1:])}. Name one with --series-uid.")
        choice.append(f"{len(series)} series in the folder; read the largest, {_uid(chosen.uid)}")
    frame_order = first_position = None
    if len(chosen.files) == 1 and int(_header(chosen.files[0]).get(TAG_FRAMES, "").strip() or 1) > 1:
        files = chosen.files
        frame_order, slice_notes, step, first_position = _order_frames(files[0])
    else:
        files, slice_notes, step = _order_slices(chosen.files)
    for note in skipped + slice_notes:
        log(f"warning: {folder}: {note}")
    return SeriesFiles(chosen, files, skipped + choice + slice_notes, step, frame_order, first_position)


def read_dicom_series(folder: str | os.PathLike, series_uid: str | None = None,
                      log: Callable[[str], None] = print, skip_unreadable: bool = False) -> DicomVolume:
    """Read one series of ``folder`` into a 3D image in LPS patient coordinates (CT in HU).

    Arguments and errors as for ``inspect_series``, which chooses and checks the files first.
    """
    folder = Path(folder)
    found = inspect_series(folder, series_uid, skip_unreadable, log)
    try:
        with _quiet_itk():
            image = sitk.ReadImage(found.files if found.frame_order is None else found.files[0])
    except RuntimeError as error:
        raise DicomError(f"Could not read series {_uid(found.series.uid)} in {folder}: {error}") from error
    if found.frame_order is not None:
        image = _frames_in_order(image, found)
    notes = list(found.notes)
    if found.slice_step is not None:
        image = _place_slices(image, found.slice_step, notes, log, folder)
    modality = _header(found.files[0]).get(TAG_MODALITY, "").strip()
    return DicomVolume(image=image, folder=folder, series_uid=found.series.uid, num_files=len(found.files),
                       modality=modality, warnings=notes)


def dicom_to_nifti(input_path: str | os.PathLike, output_dir: str | os.PathLike, series_uid: str | None = None,
                   overwrite: bool = False, nnunet_names: bool = False, skip_unreadable: bool = False,
                   log: Callable[[str], None] = print) -> list[Path]:
    """Convert a series folder, or a folder of series folders, to ``output_dir/<case>.nii.gz`` files.

    Args:
        input_path: a folder holding one series, or a folder whose subfolders each hold one case's series.
        output_dir: created if missing.
        series_uid: which series to take when a folder holds several (default: the largest).
        overwrite: replace existing output files; without it an existing file stops the run before any is written.
        nnunet_names: name the files ``<case>_0000.nii.gz``, so the folder is an nnU-Net input folder.
        skip_unreadable: go on without DICOM files that cannot be read, naming each in a warning.

    Every series is checked from its headers and the output folder for writing before the first file is written.
    Returns the written files. Raises DicomError (no series, unreadable files, colliding case names),
    FileExistsError (existing output) or OutputFolderError (an output folder that cannot be written).
    """
    cases = find_dicom_cases(input_path)
    output_dir = Path(output_dir)
    suffix = "_0000" if nnunet_names else ""
    targets = [output_dir / f"{name}{suffix}{NIFTI_ENDING}" for name, _ in cases]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{len(existing)} output file(s) exist already, e.g. {existing[0]}. Pass --overwrite "
                              "to replace them, or choose another output folder.")
    for _, folder in cases:
        inspect_series(folder, series_uid, skip_unreadable, log=lambda message: None)
    require_writable_folder(output_dir)
    with stop_signals_raise():
        for index, ((_, folder), target) in enumerate(zip(cases, targets), start=1):
            log(f"[{index}/{len(cases)}] {folder} -> {target}")
            volume = read_dicom_series(folder, series_uid, log, skip_unreadable)
            write_image_atomically(volume.image, target)
    return targets


def require_writable_folder(folder: Path) -> None:
    """Create ``folder`` if needed and write and remove a file in it: a read-only or full disk, or a path under a
    file, is found before any work instead of after it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".nnunet-ext-write-test-"):
            pass
    except OSError as error:
        raise OutputFolderError(f"Cannot write to the output folder {folder} ({error.strerror or error}). Choose "
                                "a folder you can write to with -o.") from error


@contextlib.contextmanager
def stop_signals_raise():
    """SIGTERM ends the process through SystemExit (status 143) instead of at once, so ``finally`` blocks remove
    partial files as they do on Ctrl-C. Only where SIGTERM has its default action, in the main thread."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def stop(signum: int, _frame) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def write_image_atomically(image: sitk.Image, target: Path) -> None:
    """Write into a hidden folder beside ``target`` and rename, so an interrupted write never leaves a truncated file,
    nor one that nnU-Net's file listing (which does not look into folders) or an image reader would pick up. The
    file keeps its real name there, so SimpleITK chooses the format and compression from it."""
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        sitk.WriteImage(image, str(staging / target.name), useCompression=True)
        os.replace(staging / target.name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _quiet_itk():
    """Hide ITK's known harmless warnings (``HARMLESS_ITK_WARNINGS``) printed during the block, pass on the others.

    ITK prints to the process' standard error (file descriptor 2), so the block's output there is caught in a file
    and written out afterwards without the harmless warnings; other output to standard error in that time (another
    thread's) comes out after the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [block for block in re.split(r"(?m)^(?=WARNING: In )", caught.read().decode(errors="replace"))
                    if not any(harmless in block for harmless in HARMLESS_ITK_WARNINGS)]
            if "".join(kept):
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _choose_series(folder: Path, series: list[DicomSeries], series_uid: str | None) -> DicomSeries:
    if series_uid is None:
        if len(series) > 1 and len(series[0].files) == len(series[1].files):
            tied = [s for s in series if len(s.files) == len(series[0].files)]
            raise DicomError(f"{folder} holds {len(series)} series and {len(tied)} of them tie for the largest with "
                             f"{len(series[0].files)} files: {_describe(tied)}. Name the one to read with "
                             "--series-uid.")
        return series[0]
    for candidate in series:
        if candidate.uid == series_uid:
            return candidate
    raise DicomError(f"Series {series_uid} is not in {folder}; it holds: {_describe(series)}.")


def _uid(uid: str) -> str:
    return uid.strip() or "(no Series Instance UID)"


def _describe(series: list[DicomSeries]) -> str:
    return "; ".join(f"{_uid(s.uid)} ({len(s.files)} files"
                     f"{', ' + s.description.strip() if s.description.strip() else ''})" for s in series)


def _names(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _header(file: str) -> dict[str, str]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    reader.ReadImageInformation()
    return {key: reader.GetMetaData(key) for key in reader.GetMetaDataKeys()}


def _order_slices(files: list[str]) -> tuple[list[str], list[str], np.ndarray | None]:
    """Files sorted by position along the slice normal without repeated positions, notes on the spacing, and the
    mean step from one slice to the next (mm, LPS; None when the headers do not say)."""
    if len(files) == 1:
        return files, [], None
    headers = [_header(f) for f in files]
    _refuse_other_sizes(files, headers)
    if any(TAG_POSITION not in h or TAG_ORIENTATION not in h for h in headers):
        return files, ["some slices lack Image Position/Orientation (Patient); slices kept in GDCM's order"], None
    where = f"series of {Path(files[0]).parent}"
    order, notes, step = _arrange_slices([Path(f).name for f in files],
                                         np.array([_numbers(h[TAG_POSITION]) for h in headers]),
                                         np.array([_numbers(h[TAG_ORIENTATION]) for h in headers]), where)
    return [files[i] for i in order], notes, step


def _arrange_slices(names: list[str], positions: np.ndarray, orientations: np.ndarray,
                    where: str) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Slices (files or frames) in position order along the normal, without repeated positions: their indices, the
    notes on duplicates and uneven steps, and the mean step vector."""
    orientation = _common_orientation(names, orientations, where)
    normal = np.cross(orientation[:3], orientation[3:])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along = along[order]
    notes = []
    repeated = np.diff(along) < DUPLICATE_DISTANCE_MM
    if repeated.any():
        notes.append(f"{int(repeated.sum())} duplicated slice(s) at position(s) "
                     f"{_positions(along[1:][repeated])} mm along the slice normal; kept the first of each")
        keep = np.concatenate([[True], ~repeated])
        order, along = order[keep], along[keep]
    steps = np.diff(along)
    if len(steps):
        step = float(np.median(steps))
        uneven = np.abs(steps - step) > SPACING_TOLERANCE * step
        if uneven.any():
            gaps = [f"{along[i]:.2f} -> {along[i + 1]:.2f}" for i in np.flatnonzero(uneven)]
            notes.append(f"inconsistent slice spacing (missing slices?): the usual step is {step:.2f} mm but the "
                         f"step is different between positions {', '.join(gaps)} mm along the slice normal; the "
                         f"volume assumes an even step of {(along[-1] - along[0]) / (len(along) - 1):.2f} "
                         "mm, so anatomy there is displaced. Re-export the complete series.")
    mean_step = (positions[order[-1]] - positions[order[0]]) / max(len(order) - 1, 1)
    return order, notes, mean_step


def _common_orientation(names: list[str], orientations: np.ndarray, where: str) -> np.ndarray:
    """The Image Orientation (Patient) that the slices share; slices with another one are an error: ITK would stack
    them as if they were parallel."""
    rounded = [tuple(np.round(o, 3)) for o in orientations]
    usual = max(set(rounded), key=rounded.count)
    odd = [f"{name} ({_cosines(o)})" for name, o in zip(names, orientations)
           if not np.allclose(o, usual, atol=ORIENTATION_TOLERANCE)]
    if odd:
        raise DicomError(f"Slice(s) with another orientation in {where}: {_names(odd)}; the other "
                         f"{len(names) - len(odd)} slices have Image Orientation (Patient) {_cosines(usual)}. A "
                         "series must be one stack of parallel slices: move the odd file(s) out of the folder (a "
                         "localizer or a reformatted slice?), or re-export the series.")
    return orientations[rounded.index(usual)]


def _numbers(value: str) -> list[float]:
    return [float(v) for v in value.split("\\")]


def _cosines(values) -> str:
    return "\\".join(f"{float(v) + 0.0:g}" for v in values)  # + 0.0: no "-0"


def _order_frames(file: str) -> tuple[list[int], list[str], np.ndarray, np.ndarray]:
    """The frames of one multi-frame file (Enhanced CT) in position order from its per-frame functional groups,
    the notes on them, the mean step and the first frame's position. GDCM places the frames by the first one's
    position and the stored Spacing Between Slices, and keeps their stored order; this checks both."""
    import pydicom  # only here: SimpleITK does not give the functional group sequences

    dataset = pydicom.dcmread(file, stop_before_pixels=True)
    shared = (dataset.get("SharedFunctionalGroupsSequence") or [None])[0]
    frames = dataset.get("PerFrameFunctionalGroupsSequence") or []
    positions = [_functional_group(f, shared, "PlanePositionSequence", "ImagePositionPatient") for f in frames]
    orientations = [_functional_group(f, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
                    for f in frames]
    count = int(dataset.get("NumberOfFrames", 1))
    if len(frames) != count or any(p is None for p in positions) or any(o is None for o in orientations):
        raise DicomError(f"{file} is a multi-frame DICOM file ({count} frames, SOP class "
                         f"{dataset.get('SOPClassUID', '?')}) whose per-frame functional groups do not give every "
                         "frame's Plane Position and Orientation, so its frames cannot be placed as a volume (is it "
                         "a cine or a localizer?). If it is a volume, convert it with dcm2niix, which has its own "
                         "rules for vendors' multi-frame files, check the NIfTI file's geometry and give that file.")
    order, notes, step = _arrange_slices([f"frame {i + 1}" for i in range(count)], np.array(positions),
                                         np.array(orientations), f"multi-frame file {file}")
    return [int(i) for i in order], notes, step, np.array(positions[order[0]])


def _functional_group(frame, shared, sequence: str, attribute: str) -> list[float] | None:
    """An attribute of a frame's functional group, or of the shared one where the frame has none."""
    for group in (frame, shared):
        if group is not None and group.get(sequence) and attribute in group.get(sequence)[0]:
            return [float(v) for v in group.get(sequence)[0].get(attribute)]
    return None


def _frames_in_order(image: sitk.Image, found: SeriesFiles) -> sitk.Image:
    """The frames of a multi-frame image in position order, placed at the first one's position, stacked along the
    normal of rows and columns (GDCM may take a stack stored from the last position as a flipped one)."""
    ordered = sitk.GetImageFromArray(sitk.GetArrayViewFromImage(image)[found.frame_order])
    rows, columns = np.array(image.GetDirection()).reshape(3, 3)[:, :2].T
    normal = np.cross(rows, columns)
    ordered.SetDirection(tuple(np.column_stack([rows, columns, normal]).ravel()))
    ordered.SetOrigin(tuple(float(v) for v in found.first_position))
    ordered.SetSpacing((*image.GetSpacing()[:2], float(found.slice_step @ normal)))
    return ordered


def _place_slices(image: sitk.Image, step: np.ndarray, notes: list[str], log: Callable[[str], None],
                  folder: Path) -> sitk.Image:
    """The image on a grid orthogonal to its slices: a gantry tilt (slices that step sideways, not along their
    normal) is resampled, with a warning, instead of being sheared as ITK reads it."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = np.array(image.GetSpacing())
    steps = direction.T @ step  # along the rows, the columns and the normal
    sideways = float(np.hypot(steps[0], steps[1]))
    if sideways * (image.GetSize()[2] - 1) <= TILT_TOLERANCE * min(spacing[:2]):
        return image
    resampled = _resample_tilted(image, steps)
    angle = float(np.degrees(np.arctan2(sideways, steps[2])))
    note = (f"gantry tilt of {angle:.1f} degrees: each slice is {sideways:.2f} mm sideways of the one before, "
            f"{steps[2]:.2f} mm along the slice normal; resampled (linear) onto a grid orthogonal to the slices, "
            f"{image.GetSize()} -> {resampled.GetSize()} voxels, corners outside the scan filled with the lowest "
            "value")
    notes.append(note)
    log(f"warning: {folder}: {note}")
    return resampled


def _resample_tilted(image: sitk.Image, steps: np.ndarray) -> sitk.Image:
    """Resample slices that step by ``steps`` (rows, columns, normal; mm) onto the orthogonal grid of the same
    spacing that covers them all."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    origin = np.array(image.GetOrigin())
    (dx, dy, _), size = image.GetSpacing(), np.array(image.GetSize())
    as_stacked = sitk.Image(image)  # the voxels as stacked along the normal, which is what the resampler reads
    as_stacked.SetSpacing((dx, dy, float(steps[2])))
    stacked_axes = direction @ np.diag([dx, dy, steps[2]])
    true_axes = direction @ np.column_stack([[dx, 0, 0], [0, dy, 0], steps])
    # an output point x lies at index A^-1 (x - origin) of the true grid, i.e. at origin + B A^-1 (x - origin)
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(tuple((stacked_axes @ np.linalg.inv(true_axes)).ravel()))
    transform.SetCenter(tuple(origin))
    drift = steps[:2] * (size[2] - 1)
    new_size = [int(size[0] + np.ceil(abs(drift[0]) / dx - 1e-3)), int(size[1] + np.ceil(abs(drift[1]) / dy - 1e-3)),
                int(size[2])]
    new_origin = origin + direction[:, :2] @ np.minimum(drift, 0)
    lowest = float(sitk.GetArrayViewFromImage(image).min())
    return sitk.Resample(as_stacked, new_size, transform, sitk.sitkLinear, tuple(new_origin),
                         (dx, dy, float(steps[2])), image.GetDirection(), lowest, image.GetPixelID())


def _refuse_other_sizes(files: list[str], headers: list[dict[str, str]]) -> None:
    """Slices of another size than most: ITK would fail with a dump of its image regions."""
    sizes = [(h.get(TAG_ROWS, "?").strip(), h.get(TAG_COLUMNS, "?").strip()) for h in headers]
    usual = max(set(sizes), key=sizes.count)
    other = [f"{Path(f).name} ({rows} x {columns})" for f, (rows, columns) in zip(files, sizes) if (rows, columns)
             != usual]
    if other:
        raise DicomError(f"Slice(s) of another size in series of {Path(files[0]).parent}: {_names(other)}; the other "
                         f"{sizes.count(usual)} slices have {usual[0]} x {usual[1]} (rows x columns). Move the "
                         "odd file(s) out of the folder (a localizer or another series?), or re-export the series.")


def _positions(values: np.ndarray) -> str:
    return ", ".join(f"{v:.2f}" for v in values)
