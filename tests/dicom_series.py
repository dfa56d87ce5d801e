"""Writes CT series as DICOM files with SimpleITK, for the DICOM and detection tests."""
from __future__ import annotations

import locale
from pathlib import Path

import numpy as np
import SimpleITK as sitk

# Rescale of the stored values: HU = stored * SLOPE + INTERCEPT (stored values differ from HU, as on scanners).
SLOPE, INTERCEPT = 2.0, -1024.0


def write_series(image: sitk.Image, folder: Path, series_uid: str = "1.2.826.0.1.3680043.2.1125.970.1",
                 skip: tuple[int, ...] = (), repeat: tuple[int, ...] = (), modality: str = "CT",
                 slope: float = SLOPE, intercept: float = INTERCEPT, tilt_shift_mm: float = 0.0,
                 orientations: dict[int, tuple[float, ...]] | None = None) -> list[Path]:
    """Write the slices of a 3D HU image as one DICOM file each, carrying its geometry in the tags.

    File names run against the slice order (so a reader sorting by name gets it wrong); ``skip`` leaves slices out
    (a gap), ``repeat`` writes slices twice (same position, new instance UID). ``tilt_shift_mm`` moves slice k by
    k times that along the column direction, as a gantry tilt does (the image's voxels are then not where its
    geometry says: the caller samples its content on the tilted grid); ``orientations`` gives slice k another
    Image Orientation (Patient). The writer stores (HU - intercept) / slope, truncated to integers. Returns the files
    written.
    """
    # SimpleITK's DICOM writer leaves the C locale's character set behind (ASCII), which breaks decoding the
    # output of every later subprocess of the test session (run_command's text=True)
    saved_locale = locale.setlocale(locale.LC_ALL)
    try:
        return _write_slices(image, folder, series_uid, skip, repeat, modality, slope, intercept, tilt_shift_mm,
                             orientations or {})
    finally:
        locale.setlocale(locale.LC_ALL, saved_locale)


def _write_slices(image: sitk.Image, folder: Path, series_uid: str, skip: tuple[int, ...], repeat: tuple[int, ...],
                  modality: str, slope: float, intercept: float, tilt_shift_mm: float,
                  orientations: dict[int, tuple[float, ...]]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    row_cosine, column_cosine = direction[:, 0], direction[:, 1]
    spacing = image.GetSpacing()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()  # write our UIDs, not new ones
    files = []
    size_z = image.GetSize()[2]
    copies = [k for k in range(size_z) if k not in skip] + list(repeat)
    for number, k in enumerate(copies):
        position = np.array(image.TransformIndexToPhysicalPoint((0, 0, k))) + k * tilt_shift_mm * column_cosine
        data = sitk.GetArrayFromImage(image[:, :, k]).astype(np.int16)
        slice_image = sitk.GetImageFromArray(data)
        slice_image.SetSpacing(spacing[:2])
        tags = {
            "0008|0060": modality,
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": f"{series_uid}.{number + 1}",
            "0020|000d": f"{series_uid}.0",
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": "\\".join(f"{v:.6f}" for v in orientations.get(k, (*row_cosine, *column_cosine))),
            "0028|0030": f"{spacing[1]:.6f}\\{spacing[0]:.6f}",
            "0018|0050": f"{spacing[2]:.6f}",
            "0028|1052": f"{intercept:g}",
            "0028|1053": f"{slope:g}",
        }
        for tag, value in tags.items():
            slice_image.SetMetaData(tag, value)
        file = folder / f"IM{len(copies) - number:04d}.dcm"
        writer.SetFileName(str(file))
        writer.Execute(slice_image)
        files.append(file)
    return files


def stored_pixels(file: Path, count: int) -> np.ndarray:
    """The raw stored values of an uncompressed 16-bit file: its last element is the pixel data."""
    return np.frombuffer(file.read_bytes()[-2 * count:], dtype="<i2")


def hu_phantom(size_xyz: tuple[int, int, int], spacing: tuple[float, float, float],
               direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1),
               origin: tuple[float, float, float] = (-20.0, -15.0, 100.0)) -> sitk.Image:
    """A CT-like volume in HU with even values (exact after SLOPE 2) and no symmetry, so flips show."""
    z, y, x = np.meshgrid(*(np.arange(n) for n in size_xyz[::-1]), indexing="ij")
    values = -1000 + 2 * ((7 * x + 13 * y + 29 * z) % 900)
    image = sitk.GetImageFromArray(values.astype(np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image
