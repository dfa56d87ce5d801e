"""Synthetic tumour-segmentation datasets in nnU-Net v2's raw format, for tests and demos.

No labelled tumour images can be shipped or downloaded here, so this module draws a small phantom that looks enough
like an abdominal scan for a short nnU-Net training to learn something real:

* a body outline (a deformed ellipse in every slice, air outside) with a subcutaneous fat layer, a muscle wall and
  fatty, textured viscera inside;
* one organ (label 1): an irregular ellipsoid, i.e. a level set of an ellipsoid whose radius is modulated by smooth
  low-frequency noise, kept inside the viscera;
* one or two tumours (label 2) inside the organ, irregular ellipsoids as well, together about 5-15 % of the organ.

Channel 0 is CT-like, in Hounsfield units (air -1000, fat -100, muscle about 45, organ 45-60, tumour 50-65 HU
brighter than the organ, like a hypervascular lesion in the arterial phase), blurred a little (partial volume) and
with Gaussian noise. The tumour is hyperdense on purpose: nnU-Net's CT normalisation clips intensities to the
foreground's 0.5-99.5 percentiles, which would flatten a hypodense tumour into the darker surroundings and leave only
its shape to learn, too slow for a short CPU training. Further channels are MRI-like sequences
("T1", "T2", "FLAIR", ...) with their own organ/tumour contrast, a smooth bias field, a per-case intensity scale
and magnitude noise; their names make nnU-Net z-score them, while "CT" gets its CT normalisation.

Everything is drawn on normalised coordinates ([-1, 1] along every axis), so any grid size gives the same anatomy.
3D images have the anisotropic spacing (z, y, x) = (2.5, 0.8, 0.8) mm of a typical abdominal CT; 2D images are
single slices stored as 2D NIfTI files, which nnU-Net's SimpleITKIO reads as 2D data. Every case has the same
spacing, so nnU-Net never resamples. A case depends only on ``(seed, case index)``: the same seed always gives the
same arrays.

Layout written (``case_XXX`` numbering continues from the training into the test cases, so names are unique)::

    DatasetXXX_<Name>/
        dataset.json
        imagesTr/case_000_0000.nii.gz ...   one file per channel (_0000, _0001, ...)
        labelsTr/case_000.nii.gz ...
        imagesTs/case_010_0000.nii.gz ...   held-out cases
        labelsTs/case_010.nii.gz ...        their ground truth, to evaluate predictions
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import uuid

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from nnunet_ext.datasets import folders_with_id

__all__ = ["make_synthetic_dataset", "find_dataset_folder"]

SPACING_3D_ZYX = (2.5, 0.8, 0.8)
SPACING_2D_YX = (0.8, 0.8)
DEFAULT_SHAPE_3D = (32, 64, 64)
DEFAULT_SHAPE_2D = (96, 96)
# Below this the muscle wall and the tumours shrink to a voxel or two.
MIN_AXIS_LENGTH = 16
FILE_ENDING = ".nii.gz"

# Tissue classes of the phantom; they index the rows of TISSUE_INTENSITIES.
AIR, FAT, MUSCLE, VISCERA, ORGAN, TUMOUR = range(6)
# Mean intensity of air, fat, muscle, viscera, organ and tumour per channel. CT is in HU (organ and tumour vary
# per case around these); the MRI-like sequences are in arbitrary units, each with its own tumour contrast.
TISSUE_INTENSITIES = {
    "CT": (-1000.0, -100.0, 45.0, -40.0, 52.0, 110.0),
    "T1": (0.0, 900.0, 450.0, 550.0, 650.0, 380.0),
    "T2": (0.0, 700.0, 280.0, 450.0, 320.0, 800.0),
    "FLAIR": (0.0, 600.0, 300.0, 420.0, 380.0, 650.0),
    "T1c": (0.0, 850.0, 480.0, 560.0, 700.0, 1000.0),
    "DWI": (0.0, 150.0, 300.0, 250.0, 350.0, 750.0),
    "ADC": (0.0, 200.0, 1400.0, 1200.0, 1100.0, 600.0),
    "PD": (0.0, 950.0, 600.0, 700.0, 750.0, 900.0),
}
CHANNEL_NAMES = tuple(TISSUE_INTENSITIES)
MAX_CHANNELS = len(CHANNEL_NAMES)
CT_NOISE_HU = 10.0
CT_VISCERA_TEXTURE_HU = 20.0
MRI_NOISE_FRACTION = 0.03
PARTIAL_VOLUME_SIGMA_VOXELS = 0.6
# Tumour volume as a fraction of the organ (tumours included), and how often a draw outside it is repeated.
TUMOUR_FRACTION_RANGE = (0.05, 0.15)
MAX_TUMOUR_DRAWS = 20

LABELS = {"background": 0, "organ": 1, "tumour": 2}
REGION_LABELS = {"background": 0, "organ": [1, 2], "tumour": [2]}
REGIONS_CLASS_ORDER = [1, 2]

_DATASET_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def find_dataset_folder(dataset_id: int, raw_dir: str | os.PathLike | None = None) -> pathlib.Path | None:
    """Return the raw folder ``DatasetXXX_<anything>`` of ``dataset_id``, or None if there is none.

    ``raw_dir`` defaults to the ``nnUNet_raw`` environment variable. Raises RuntimeError if ``nnUNet_raw`` is needed
    but unset, or if several folders share the id (nnU-Net itself refuses to run then).
    """
    _check_dataset_id(dataset_id)
    matches = folders_with_id(_resolve_raw_dir(raw_dir), dataset_id)
    if len(matches) > 1:
        raise RuntimeError(
            f"Several raw folders share dataset id {dataset_id}: {', '.join(str(m) for m in matches)}. "
            "nnU-Net needs exactly one folder per id; remove or renumber the others.")
    return matches[0] if matches else None


def make_synthetic_dataset(dataset_id: int, *, dim: int = 3, num_cases: int = 10, num_test_cases: int = 2,
                           channels: int = 1, regions: bool = False, overwrite: bool = False,
                           raw_dir: str | os.PathLike | None = None, shape: tuple[int, ...] | None = None,
                           seed: int = 0, name: str | None = None) -> pathlib.Path:
    """Write a synthetic organ/tumour dataset in nnU-Net v2's raw format and return its folder.

    Args:
        dataset_id: nnU-Net dataset id, 1..999; the folder is ``Dataset{dataset_id:03d}_{name}``.
        dim: 2 (single-slice 2D NIfTI images) or 3.
        num_cases: training cases (imagesTr/labelsTr). nnU-Net's folds 0-4 need at least 5; fold ``all`` works
            with fewer.
        num_test_cases: held-out cases (imagesTs/labelsTs), numbered after the training cases.
        channels: number of input channels, 1..8. Channel 0 is CT-like ("CT"); further channels are MRI-like
            ("T1", "T2", "FLAIR", "T1c", "DWI", "ADC", "PD").
        regions: declare the labels as nnU-Net regions (organ = {1, 2}, tumour = {2}) with
            ``regions_class_order``; the label files are the same either way.
        overwrite: replace any raw folder that already has this id (only after the new dataset is complete).
        raw_dir: nnU-Net raw folder; defaults to the ``nnUNet_raw`` environment variable. Created if missing.
        shape: image size (z, y, x) for 3D or (y, x) for 2D, at least 16 per axis; defaults to (32, 64, 64) and
            (96, 96).
        seed: random seed; the same seed gives identical images and labels.
        name: dataset name after the id; defaults to e.g. ``Synth3D``, ``Synth2D3ch`` or ``Synth3DRegions``.

    Raises:
        ValueError: an invalid argument.
        RuntimeError: ``raw_dir`` is None and ``nnUNet_raw`` is unset, or the raw folder is a file.
        FileExistsError: a raw folder with this id exists and ``overwrite`` is False (nothing is touched then).
    """
    _check_dataset_id(dataset_id)
    _check_arguments(dim, num_cases, num_test_cases, channels, seed)
    shape = _check_shape(dim, shape)
    name = _check_name(name if name is not None else _default_name(dim, channels, regions))
    root = _resolve_raw_dir(raw_dir)

    existing = folders_with_id(root, dataset_id)
    if existing and not overwrite:
        raise FileExistsError(
            f"Dataset id {dataset_id} already exists in {root}: {', '.join(e.name for e in existing)}. "
            "Pass --overwrite to replace it, or choose another dataset id.")

    root.mkdir(parents=True, exist_ok=True)
    target = root / f"Dataset{dataset_id:03d}_{name}"
    # Build the dataset in a hidden sibling folder (nnU-Net only looks at "Dataset*" folders) and rename it at the
    # end, so an interrupted run never leaves a half dataset under the real name.
    staging = root / f".{target.name}.incomplete-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        _write_dataset(staging, name, num_cases, num_test_cases, channels, regions, shape, seed)
        for folder in existing:
            shutil.rmtree(folder)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _is_integer(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_dataset_id(dataset_id: int) -> None:
    if not _is_integer(dataset_id) or not 1 <= dataset_id <= 999:
        raise ValueError(f"Invalid dataset id {dataset_id!r}: nnU-Net dataset ids are integers from 1 to 999.")


def _check_arguments(dim: int, num_cases: int, num_test_cases: int, channels: int, seed: int) -> None:
    if not _is_integer(dim) or dim not in (2, 3):
        raise ValueError(f"Invalid --dim {dim!r}: use 2 (2D slices) or 3 (3D volumes).")
    if not _is_integer(num_cases) or num_cases < 1:
        raise ValueError(f"Invalid number of training cases {num_cases!r}: use at least 1 "
                         "(at least 5 for nnU-Net's 5-fold cross-validation).")
    if not _is_integer(num_test_cases) or num_test_cases < 0:
        raise ValueError(f"Invalid number of test cases {num_test_cases!r}: use 0 or more.")
    if not _is_integer(channels) or not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"Invalid number of channels {channels!r}: use 1 to {MAX_CHANNELS} "
                         f"({', '.join(CHANNEL_NAMES)}).")
    if not _is_integer(seed) or seed < 0:
        raise ValueError(f"Invalid seed {seed!r}: use an integer of 0 or more.")


def _check_shape(dim: int, shape: tuple[int, ...] | None) -> tuple[int, ...]:
    if shape is None:
        return DEFAULT_SHAPE_3D if dim == 3 else DEFAULT_SHAPE_2D
    shape = tuple(shape)
    if len(shape) != dim or not all(_is_integer(s) and s >= MIN_AXIS_LENGTH for s in shape):
        axes = "(z, y, x)" if dim == 3 else "(y, x)"
        raise ValueError(f"Invalid --shape {' '.join(map(str, shape))} for --dim {dim}: give {dim} integers "
                         f"{axes}, each at least {MIN_AXIS_LENGTH}.")
    return tuple(int(s) for s in shape)


def _check_name(name: str) -> str:
    if not _DATASET_NAME_PATTERN.fullmatch(name):
        raise ValueError(f"Invalid dataset name {name!r}: use letters, digits, '_' and '-', starting with a letter "
                         "or digit (the folder becomes DatasetXXX_<name>).")
    return name


def _default_name(dim: int, channels: int, regions: bool) -> str:
    return f"Synth{dim}D" + (f"{channels}ch" if channels > 1 else "") + ("Regions" if regions else "")


def _resolve_raw_dir(raw_dir: str | os.PathLike | None) -> pathlib.Path:
    if raw_dir is not None:
        root, source = pathlib.Path(raw_dir), "The raw data folder"
    else:
        from_environment = os.environ.get("nnUNet_raw")
        if not from_environment:
            raise RuntimeError("The environment variable nnUNet_raw is not set, so nnU-Net's raw data folder is "
                               "unknown. Set it, e.g. `export nnUNet_raw=/path/to/nnUNet_raw`.")
        root, source = pathlib.Path(from_environment), "nnUNet_raw"
    if root.exists() and not root.is_dir():
        raise RuntimeError(f"{source} ({root}) is a file, not a folder. Point nnUNet_raw at a folder, e.g. "
                           "`export nnUNet_raw=/path/to/nnUNet_raw`.")
    return root


def _write_dataset(folder: pathlib.Path, name: str, num_cases: int, num_test_cases: int, channels: int,
                   regions: bool, shape: tuple[int, ...], seed: int) -> None:
    spacing_zyx = SPACING_3D_ZYX if len(shape) == 3 else SPACING_2D_YX
    channel_names = CHANNEL_NAMES[:channels]
    splits = (("imagesTr", "labelsTr", range(num_cases)),
              ("imagesTs", "labelsTs", range(num_cases, num_cases + num_test_cases)))
    for images_name, labels_name, case_indices in splits:
        (folder / images_name).mkdir()
        (folder / labels_name).mkdir()
        for case_index in case_indices:
            images, label = _make_case(np.random.default_rng([seed, case_index]), shape, channel_names)
            case_id = f"case_{case_index:03d}"
            for channel, image in enumerate(images):
                _write_image(image, folder / images_name / f"{case_id}_{channel:04d}{FILE_ENDING}", spacing_zyx)
            _write_image(label, folder / labels_name / f"{case_id}{FILE_ENDING}", spacing_zyx)

    dataset_json = {
        "name": name,
        "description": (f"Synthetic organ/tumour phantom from nnunet_ext.synthetic (seed={seed}, shape={list(shape)}, "
                        f"spacing={list(spacing_zyx)} mm). Test cases have ground truth in labelsTs."),
        "channel_names": {str(i): channel_name for i, channel_name in enumerate(channel_names)},
        "labels": REGION_LABELS if regions else LABELS,
        "numTraining": num_cases,
        "file_ending": FILE_ENDING,
    }
    if regions:
        dataset_json["regions_class_order"] = REGIONS_CLASS_ORDER
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2) + "\n")


def _write_image(array: np.ndarray, path: pathlib.Path, spacing_zyx: tuple[float, ...]) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))  # SimpleITK orders spacing (x, y, z)
    sitk.WriteImage(image, str(path), useCompression=True)


def _make_case(rng: np.random.Generator, shape: tuple[int, ...],
               channel_names: tuple[str, ...]) -> tuple[list[np.ndarray], np.ndarray]:
    """Draw one case: a list of int16 images (one per channel) and the uint8 label map (0, 1 organ, 2 tumour)."""
    tissue, label = _make_anatomy(rng, shape)
    images = [_render_ct(rng, tissue) if channel_name == "CT" else _render_mri(rng, tissue, channel_name)
              for channel_name in channel_names]
    return images, label


def _make_anatomy(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Return the tissue-class map and the label map of one case."""
    coords = np.meshgrid(*[np.linspace(-1 + 1 / n, 1 - 1 / n, n) for n in shape], indexing="ij")

    # Body: an ellipse in every slice (it runs through the whole volume, like the trunk in a CT slab), its radius
    # wobbling slightly.
    body_centre = rng.uniform(-0.03, 0.03, 2)
    body_radii = (rng.uniform(0.78, 0.88), rng.uniform(0.86, 0.95))
    body_distance = np.sqrt(sum(((c - m) / r) ** 2 for c, m, r in zip(coords[-2:], body_centre, body_radii)))
    body_distance /= 1 + 0.04 * _smooth_field(rng, shape, control_points=4)
    tissue = np.full(shape, AIR, dtype=np.uint8)
    tissue[body_distance < 1.0] = FAT
    tissue[body_distance < 0.86] = MUSCLE
    tissue[body_distance < 0.78] = VISCERA

    # Organ: an irregular ellipsoid, elongated along z, clipped to the viscera.
    organ_centre = rng.uniform(-0.12, 0.12, len(shape))
    organ_radii = rng.uniform(0.28, 0.38, len(shape))
    if len(shape) == 3:
        organ_radii[0] = rng.uniform(0.45, 0.6)
    organ_coords = [(c - m) / r for c, m, r in zip(coords, organ_centre, organ_radii)]
    organ_distance = np.sqrt(sum(c ** 2 for c in organ_coords))
    organ_distance /= 1 + 0.15 * _smooth_field(rng, shape, control_points=4)
    organ = (organ_distance < 1.0) & (tissue == VISCERA)

    tumour = _make_tumours(rng, organ, organ_coords, organ_radii)
    tissue[organ] = ORGAN
    tissue[tumour] = TUMOUR
    label = organ.astype(np.uint8) + tumour.astype(np.uint8)
    return tissue, label


def _make_tumours(rng: np.random.Generator, organ: np.ndarray, organ_coords: list[np.ndarray],
                  organ_radii: np.ndarray) -> np.ndarray:
    """Place one or two irregular tumours inside ``organ``, together 5-15 % of its volume.

    Clipping to the organ's border can shrink a draw below that range, so draws are repeated (deterministically,
    from the same generator) until one fits; the closest one is kept if none does, e.g. on a tiny grid.
    """
    voxel_size_in_organ_units = [2 / n / r for n, r in zip(organ.shape, organ_radii)]
    depth = ndimage.distance_transform_edt(organ, sampling=voxel_size_in_organ_units)
    organ_volume = organ.sum()
    closest, closest_miss = None, np.inf
    for _ in range(MAX_TUMOUR_DRAWS):
        tumour = _draw_tumours(rng, organ, organ_coords, depth)
        fraction = tumour.sum() / organ_volume
        miss = max(TUMOUR_FRACTION_RANGE[0] - fraction, fraction - TUMOUR_FRACTION_RANGE[1], 0.0)
        if miss == 0.0:
            return tumour
        if miss < closest_miss:
            closest, closest_miss = tumour, miss
    return closest


def _draw_tumours(rng: np.random.Generator, organ: np.ndarray, organ_coords: list[np.ndarray],
                  depth: np.ndarray) -> np.ndarray:
    """One draw of one or two tumours, clipped to ``organ``.

    Works in organ units (the organ's ellipsoid maps to the unit ball, ``depth`` is the distance to its border
    there), where a tumour of volume fraction f has radius about f ** (1 / dim) and its centre stays a little more
    than that from the border.
    """
    shape = organ.shape
    num_tumours = int(rng.integers(1, 3))
    total_fraction = rng.uniform(0.07, 0.13)
    radii = [(total_fraction / num_tumours) ** (1 / len(shape)) * rng.uniform(0.9, 1.1) for _ in range(num_tumours)]
    tumour = np.zeros(shape, dtype=bool)
    centres: list[np.ndarray] = []
    for radius in radii:
        allowed = depth >= 1.2 * radius  # the margin covers the tumour's own wobble
        for previous_centre, previous_radius in zip(centres, radii):
            gap = np.sqrt(sum((c - p) ** 2 for c, p in zip(organ_coords, previous_centre)))
            allowed &= gap >= radius + previous_radius
        candidates = np.flatnonzero(allowed)
        # A small or thin organ may have no such voxel: then take its deepest point.
        centre_index = rng.choice(candidates) if candidates.size else int(np.argmax(depth))
        centre = np.array([c.flat[centre_index] for c in organ_coords])
        centres.append(centre)
        axis_radii = radius * rng.uniform(0.85, 1.15, len(shape))
        distance = np.sqrt(sum(((c - m) / r) ** 2 for c, m, r in zip(organ_coords, centre, axis_radii)))
        distance /= 1 + 0.2 * _smooth_field(rng, shape, control_points=10)
        tumour |= distance < 1.0
    # The centre voxel is always inside the organ and the tumour, so the intersection is never empty.
    return tumour & organ


def _render_ct(rng: np.random.Generator, tissue: np.ndarray) -> np.ndarray:
    """CT-like image in HU: per-case organ and tumour densities, textured viscera, partial volume and noise."""
    means = np.array(TISSUE_INTENSITIES["CT"])
    organ_shift = rng.uniform(-7.0, 8.0)
    means[ORGAN] += organ_shift  # 45..60 HU
    means[TUMOUR] += organ_shift + rng.uniform(-8.0, 7.0)  # 50..65 HU above the organ
    texture = _smooth_field(rng, tissue.shape, control_points=8)
    image = means[tissue] + CT_VISCERA_TEXTURE_HU * texture * (tissue == VISCERA)
    image = ndimage.gaussian_filter(image, PARTIAL_VOLUME_SIGMA_VOXELS)
    image += rng.normal(0.0, CT_NOISE_HU, tissue.shape)
    return np.clip(np.round(image), -1024, 3071).astype(np.int16)


def _render_mri(rng: np.random.Generator, tissue: np.ndarray, channel_name: str) -> np.ndarray:
    """MRI-like image: a sequence's tissue contrast, a per-case scale, a smooth bias field and magnitude noise."""
    means = np.array(TISSUE_INTENSITIES[channel_name]) * rng.uniform(0.85, 1.15)
    bias_field = 1 + 0.1 * _smooth_field(rng, tissue.shape, control_points=3)
    image = ndimage.gaussian_filter(means[tissue] * bias_field, PARTIAL_VOLUME_SIGMA_VOXELS)
    # Magnitude images: noise in air folds over to positive values, as in real MRI.
    image = np.abs(image + rng.normal(0.0, MRI_NOISE_FRACTION * means.max(), tissue.shape))
    return np.round(image).astype(np.int16)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], control_points: int) -> np.ndarray:
    """Zero-mean, unit-variance random field that varies on about 1/``control_points`` of each axis.

    Random values on a coarse grid, upsampled to ``shape`` by cubic-spline interpolation. Spline interpolation is
    separable, so it runs as one small (n x control_points) weight matrix per axis: far cheaper than a full
    ``ndimage.zoom`` of the coarse grid.
    """
    field = rng.standard_normal((control_points,) * len(shape))
    for axis, length in enumerate(shape):
        weights = ndimage.zoom(np.eye(control_points), (length / control_points, 1), order=3, mode="nearest",
                               grid_mode=True)
        field = np.moveaxis(np.tensordot(weights, field, axes=(1, axis)), 0, axis)
    return (field - field.mean()) / field.std()
