"""DICOM series in, NIfTI out: the input side of ``nnunet-ext detect`` and the whole of ``nnunet-ext dicom2nifti``.

A series is found by its Series Instance UID (GDCM's scan of one folder, not recursive); its slices are ordered by
their position along the slice normal (Image Position Patient projected on the normal from Image Orientation
Patient), never by file name; SimpleITK applies Rescale Slope/Intercept, so CT values come out in HU. The image
keeps the series' geometry (spacing, origin, direction) in ITK's LPS patient coordinates, and a NIfTI written from
it keeps that geometry too.

Slices at the same position are dropped (the first file is kept) and reported; gaps and uneven steps between
positions are reported with the positions, because ITK then assumes the mean step for every slice and anatomy
beyond the gap is displaced.
"""
from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

__all__ = ["DicomError", "DicomSeries", "DicomVolume", "list_series", "read_dicom_series", "find_dicom_cases",
           "dicom_to_nifti", "case_name"]

TAG_POSITION = "0020|0032"
TAG_ORIENTATION = "0020|0037"
TAG_DESCRIPTION = "0008|103e"
TAG_MODALITY = "0008|0060"
# Steps between neighbouring slices that differ from the median step by more than this fraction are reported.
SPACING_TOLERANCE = 0.1
# Two slices closer than this (mm) along the normal are one position stored twice.
DUPLICATE_DISTANCE_MM = 1e-3
NIFTI_ENDING = ".nii.gz"


class DicomError(ValueError):
    """A folder without a usable DICOM series, or a series that cannot be read; the message names the fix."""


@dataclass
class DicomSeries:
    """One series of a folder: its UID and its files, not yet ordered."""

    uid: str
    files: list[str]
    description: str = ""


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

    Raises DicomError if neither ``path`` nor any of its subfolders holds a DICOM series.
    """
    path = Path(path)
    if not path.is_dir():
        raise DicomError(f"{path} is not a folder; give the folder that holds the DICOM files of a series "
                         "(or a folder of such folders, one per case).")
    if list_series(path):
        return [(case_name(path), path)]
    cases = [(case_name(sub), sub) for sub in sorted(p for p in path.iterdir() if p.is_dir()) if list_series(sub)]
    if not cases:
        raise DicomError(f"No DICOM series in {path} or its subfolders. Give the folder that holds one series' "
                         ".dcm files, or a folder with one such folder per case.")
    return cases


def case_name(folder: Path) -> str:
    """A file-system-safe case name from a series folder's name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", folder.resolve().name).strip("._") or "case"


def read_dicom_series(folder: str | os.PathLike, series_uid: str | None = None,
                      log: Callable[[str], None] = print) -> DicomVolume:
    """Read one series of ``folder`` into a 3D image in LPS patient coordinates (CT in HU).

    Args:
        folder: the folder that holds the series' files.
        series_uid: the Series Instance UID to read; None reads the only series, or the one with the most slices
            when there are several (``log`` says which and lists the others).
        log: where messages about the choice of series and the slice checks go.

    Raises:
        DicomError: no DICOM series in ``folder``, or ``series_uid`` is not one of its series.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DicomError(f"DICOM folder {folder} does not exist.")
    series = list_series(folder)
    if not series:
        raise DicomError(f"No DICOM series in {folder}. Give the folder that holds the series' .dcm files "
                         "(subfolders are not searched).")
    chosen = _choose_series(folder, series, series_uid)
    notes = []
    if series_uid is None and len(series) > 1:
        log(f"{folder} holds {len(series)} series; using the largest, {chosen.uid} ({len(chosen.files)} files). "
            f"Others: {_describe(series[1:])}. Name one with --series-uid.")
        notes.append(f"{len(series)} series in the folder; read the largest, {chosen.uid}")
    files, slice_notes = _order_slices(chosen.files)
    for note in slice_notes:
        log(f"warning: {folder}: {note}")
    notes += slice_notes

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        with _quiet_itk():  # our check above names the positions; ITK's generic warning would only repeat it
            image = reader.Execute()
    except RuntimeError as error:
        raise DicomError(f"Could not read series {chosen.uid} in {folder}: {error}") from error
    modality = _header(files[0]).get(TAG_MODALITY, "").strip()
    return DicomVolume(image=image, folder=folder, series_uid=chosen.uid, num_files=len(files), modality=modality,
                       warnings=notes)


def dicom_to_nifti(input_path: str | os.PathLike, output_dir: str | os.PathLike, series_uid: str | None = None,
                   overwrite: bool = False, nnunet_names: bool = False,
                   log: Callable[[str], None] = print) -> list[Path]:
    """Convert a series folder, or a folder of series folders, to ``output_dir/<case>.nii.gz`` files.

    Args:
        input_path: a folder holding one series, or a folder whose subfolders each hold one case's series.
        output_dir: created if missing.
        series_uid: which series to take when a folder holds several (default: the largest).
        overwrite: replace existing output files; without it an existing file stops the run before any is written.
        nnunet_names: name the files ``<case>_0000.nii.gz``, so the folder is an nnU-Net input folder.

    Returns the written files. Raises DicomError (no series) or FileExistsError (existing output).
    """
    cases = find_dicom_cases(input_path)
    output_dir = Path(output_dir)
    suffix = "_0000" if nnunet_names else ""
    targets = [output_dir / f"{name}{suffix}{NIFTI_ENDING}" for name, _ in cases]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{len(existing)} output file(s) exist already, e.g. {existing[0]}. Pass --overwrite "
                              "to replace them, or choose another output folder.")
    output_dir.mkdir(parents=True, exist_ok=True)
    for index, ((_, folder), target) in enumerate(zip(cases, targets), start=1):
        log(f"[{index}/{len(cases)}] {folder} -> {target}")
        volume = read_dicom_series(folder, series_uid, log)
        write_image_atomically(volume.image, target)
    return targets


def write_image_atomically(image: sitk.Image, target: Path) -> None:
    """Write under a temporary name and rename, so an interrupted write never leaves a truncated file."""
    partial = target.with_name(f".{target.name}.partial{NIFTI_ENDING}")
    sitk.WriteImage(image, str(partial), useCompression=True)
    os.replace(partial, target)


@contextlib.contextmanager
def _quiet_itk():
    display = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(display)


def _choose_series(folder: Path, series: list[DicomSeries], series_uid: str | None) -> DicomSeries:
    if series_uid is None:
        return series[0]
    for candidate in series:
        if candidate.uid == series_uid:
            return candidate
    raise DicomError(f"Series {series_uid} is not in {folder}; it holds: {_describe(series)}.")


def _describe(series: list[DicomSeries]) -> str:
    return "; ".join(f"{s.uid} ({len(s.files)} files{', ' + s.description.strip() if s.description.strip() else ''})"
                     for s in series)


def _header(file: str) -> dict[str, str]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    reader.ReadImageInformation()
    return {key: reader.GetMetaData(key) for key in reader.GetMetaDataKeys()}


def _order_slices(files: list[str]) -> tuple[list[str], list[str]]:
    """Files sorted by position along the slice normal without repeated positions, and notes on the spacing."""
    if len(files) == 1:
        return files, []
    headers = [_header(f) for f in files]
    if any(TAG_POSITION not in h or TAG_ORIENTATION not in h for h in headers):
        return files, ["some slices lack Image Position/Orientation (Patient); slices kept in GDCM's order"]
    orientation = np.array([float(v) for v in headers[0][TAG_ORIENTATION].split("\\")])
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.array([np.dot([float(v) for v in h[TAG_POSITION].split("\\")], normal) for h in headers])
    order = np.argsort(positions, kind="stable")
    files = [files[i] for i in order]
    positions = positions[order]

    notes = []
    steps = np.diff(positions)
    repeated = steps < DUPLICATE_DISTANCE_MM
    if repeated.any():
        notes.append(f"{int(repeated.sum())} duplicated slice(s) at position(s) "
                     f"{_positions(positions[1:][repeated])} mm along the slice normal; kept the first file of each")
        keep = np.concatenate([[True], ~repeated])
        files = [f for f, k in zip(files, keep) if k]
        positions = positions[keep]
        steps = np.diff(positions)
    if len(steps):
        step = float(np.median(steps))
        uneven = np.abs(steps - step) > SPACING_TOLERANCE * step
        if uneven.any():
            gaps = [f"{positions[i]:.2f} -> {positions[i + 1]:.2f}" for i in np.flatnonzero(uneven)]
            notes.append(f"inconsistent slice spacing (missing slices?): the usual step is {step:.2f} mm but the "
                         f"step is different between positions {', '.join(gaps)} mm along the slice normal; the "
                         f"volume assumes an even step of {(positions[-1] - positions[0]) / (len(positions) - 1):.2f} "
                         "mm, so anatomy there is displaced. Re-export the complete series.")
    return files, notes


def _positions(values: np.ndarray) -> str:
    return ", ".join(f"{v:.2f}" for v in values)
