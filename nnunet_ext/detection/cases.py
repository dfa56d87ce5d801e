"""The input cases of the RCC detection workflow: DICOM series folders or nnU-Net-named images, each checked from
its headers before any prediction, then loaded as SimpleITK images."""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from nnunet_ext import dicom

__all__ = ["DetectionCase", "collect_cases", "load_case"]

# endings of image files that are not DICOM, for the hint about nnU-Net's naming
IMAGE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".tif", ".tiff")
_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})(?P<ending>\..+)$")


@dataclass
class DetectionCase:
    """One case of the input: a DICOM series folder, or nnU-Net-named channel files."""

    name: str
    kind: str  # "dicom" or "images"
    sources: list[Path]
    series_uid: str | None = None
    skip_unreadable: bool = False


def collect_cases(input_path: str | os.PathLike, num_channels: int, file_ending: str,
                  series_uid: str | None = None, skip_unreadable: bool = False) -> list[DetectionCase]:
    """The cases of ``-i``: a DICOM series folder, a folder of such folders, a folder of nnU-Net-named images
    (``CASE_0000.nii.gz``, ...), or one such image file. Every case is checked from its headers (3D, the model's
    channels, every DICOM file readable) before any prediction.

    Raises FileNotFoundError, ValueError (2D or 4D, wrong channels, duplicate names, images not in nnU-Net's naming)
    or dicom.DicomError.
    """
    path = Path(input_path)
    if not path.exists():
        raise FileNotFoundError(f"Input {path} does not exist.")
    if path.is_file():
        match = _CHANNEL_FILE.match(path.name)
        if not match:
            raise ValueError(f"{path.name} is not in nnU-Net's naming (CASE_0000{file_ending}); rename it, or give "
                             "its DICOM series folder.")
        cases = _image_cases(path.parent, file_ending, only=match["case"])
    elif not dicom.list_series(path) and any(_CHANNEL_FILE.match(p.name) for p in path.glob(f"*{file_ending}")):
        cases = _image_cases(path, file_ending)
    else:
        cases = [DetectionCase(name, "dicom", [folder], series_uid, skip_unreadable)
                 for name, folder in _dicom_cases(path, file_ending)]

    names = [case.name for case in cases]
    if len(set(names)) != len(names):
        raise ValueError(f"Several cases of {path} would share an output folder: "
                         f"{sorted({n for n in names if names.count(n) > 1})}. Rename the input folders.")
    for case in cases:
        _check_case(case, num_channels, file_ending)
    return cases


def _dicom_cases(path: Path, file_ending: str) -> list[tuple[str, Path]]:
    """dicom.find_dicom_cases, saying what naming images need when the folder holds images but no DICOM."""
    try:
        return dicom.find_dicom_cases(path)
    except dicom.DicomError as error:
        images = sorted(p.name for p in path.iterdir() if p.is_file() and p.name.endswith(IMAGE_ENDINGS))
        if not images:
            raise
        raise ValueError(f"{path} holds no DICOM series, and its image file(s) ({', '.join(images[:3])}"
                         f"{' ...' if len(images) > 3 else ''}) are not in nnU-Net's naming: name them CASE_0000"
                         f"{file_ending} (the case name, then _0000 for the first channel, _0001 for the next, in "
                         "the model's file ending), or give the DICOM series folder.") from error


def _image_cases(folder: Path, file_ending: str, only: str | None = None) -> list[DetectionCase]:
    channels: dict[str, list[tuple[int, Path]]] = {}
    for file in sorted(folder.glob(f"*{file_ending}")):
        match = _CHANNEL_FILE.match(file.name)
        if match and match["ending"] == file_ending and (only is None or match["case"] == only):
            channels.setdefault(match["case"], []).append((int(match["channel"]), file))
    return [DetectionCase(name, "images", [file for _, file in sorted(files)]) for name, files in channels.items()]


def _check_case(case: DetectionCase, num_channels: int, file_ending: str) -> None:
    if case.kind == "dicom":
        if num_channels != 1:
            raise ValueError(f"The model expects {num_channels} channels, a DICOM series gives 1. Convert the "
                             f"series with nnunet-ext dicom2nifti and give all channels as {case.name}_0000"
                             f"{file_ending}, {case.name}_0001{file_ending}, ...")
        found = dicom.inspect_series(case.sources[0], case.series_uid, case.skip_unreadable, log=lambda m: None)
        if found.num_slices < 2:  # an Enhanced CT holds all its slices in one file
            raise ValueError(f"Case {case.name}: series {found.series.uid or '(no Series Instance UID)'} has a "
                             "single slice (a 2D image); detection needs a 3D volume, i.e. the whole series.")
        return
    numbers = [int(_CHANNEL_FILE.match(f.name)["channel"]) for f in case.sources]
    if numbers != list(range(num_channels)):
        raise ValueError(f"Case {case.name} has channel files {numbers}, the model expects "
                         f"{list(range(num_channels))} ({case.name}_0000{file_ending} ...).")
    sizes = []
    for file in case.sources:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(file))
        reader.ReadImageInformation()
        _check_volume(file.name, reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents())
        sizes.append(reader.GetSize())
    for file, size in zip(case.sources[1:], sizes[1:]):
        if size != sizes[0]:
            raise ValueError(f"{file.name} has size {size}, channel 0 {sizes[0]}: all channels of a case must share "
                             "one grid.")


def _check_volume(name: str, dimension: int, size: Sequence[int], components: int) -> None:
    """One scalar 3D volume per channel file."""
    if components > 1:
        raise ValueError(f"{name} has {components} components per voxel (a vector or RGB image); detection needs "
                         "one value per voxel: store each component as its own channel file (CASE_0000, "
                         "CASE_0001, ...) for a model trained with those channels.")
    if dimension != 3 or min(size) < 2:
        kind = "2D" if dimension < 3 or min(size) < 2 else f"{dimension}D"
        fix = ("split it into one 3D file per channel (CASE_0000, CASE_0001, ...)" if dimension > 3
               else "give the whole series or volume")
        raise ValueError(f"{name} is a {kind} image (size {tuple(size)}); detection needs a 3D volume: {fix}.")


def load_case(case: DetectionCase, log: Callable[[str], None] = print) -> tuple[list[sitk.Image], dict]:
    """The case's channel images (same grid) and what the report says about the input."""
    if case.kind == "dicom":
        volume = dicom.read_dicom_series(case.sources[0], case.series_uid, log, case.skip_unreadable)
        info = {"kind": "dicom", "path": str(volume.folder), "series_uid": volume.series_uid,
                "files": volume.num_files, "modality": volume.modality, "warnings": volume.warnings}
        images = [volume.image]
    else:
        images = [sitk.ReadImage(str(f)) for f in case.sources]
        info = {"kind": "images", "path": [str(f) for f in case.sources], "warnings": []}
    _check_volume(f"Case {case.name}", images[0].GetDimension(), images[0].GetSize(),
                  images[0].GetNumberOfComponentsPerPixel())
    return images, info
