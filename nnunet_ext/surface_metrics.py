"""Surface distances between two masks: HD95 and the normalised surface distance (NSD, surface Dice).

Two definitions of a mask's surface, chosen with ``definition``:

* ``"element"`` (the default): the surface of Nikolov et al., "Clinically applicable segmentation of head and neck
  anatomy for radiotherapy: deep learning algorithm development and validation study", JMIR 2021, as DeepMind's
  reference code ``surface-distance`` computes it (used by the Medical Segmentation Decathlon, FLARE and Metrics
  Reloaded). The surface runs between the voxel centres, where marching cubes (marching squares in 2D) draws it.
  Every 2x2x2 (2D: 2x2) block of voxels that is neither all inside nor all outside the mask holds one surface
  element, weighted by the area (2D: length) of the marching-cubes triangles in that block at the voxel spacing.
  Distances are measured between block centres.
* ``"voxel"``: the mask voxels with a face neighbour outside the mask, each weighted 1 (MONAI's default).

Distances come from scipy's exact Euclidean distance transform of the other mask's surface, with the voxel
spacing, computed on the masks' bounding box (plus one voxel): that gives the same distances as the whole image,
faster. HD95: the larger of the two directed 95th percentiles of the distances (prediction to reference and back),
each weighted by the elements' areas. NSD: the area of both surfaces within ``tolerance_mm`` of the other surface,
over the area of both surfaces.

Empty masks: absent from both, NaN for both metrics; absent from one, HD95 is the image diagonal (the worst
possible) and NSD is 0. The image border counts as outside. Ignored voxels (nnU-Net's ignore label) belong to
neither mask, and surface elements touching them are left out (they remain targets of the distances): a
prediction inside the ignored region makes no surface.
"""
from __future__ import annotations

import functools
import itertools
import math

import numpy as np

SURFACE_DEFINITIONS = ("element", "voxel")
DEFAULT_SURFACE_DEFINITION = "element"
HD_PERCENTILE = 95.0


def _block_codes(mask: np.ndarray) -> np.ndarray:
    """The code of every 2^d block of the zero-padded ``mask`` (shape + 1 per axis): bit i set when corner i is in."""
    padded = np.pad(mask, 1)
    codes = np.zeros(tuple(n + 1 for n in mask.shape), np.uint8)
    for bit, corner in enumerate(itertools.product((0, 1), repeat=mask.ndim)):
        codes |= padded[tuple(slice(o, o + n + 1) for o, n in zip(corner, mask.shape))].astype(np.uint8) << bit
    return codes


@functools.lru_cache(maxsize=16)
def element_measure_table(spacing: tuple[float, ...]) -> np.ndarray:
    """Area (3D, mm²) or length (2D, mm) of the surface inside a 2^d block, for each of its 2^(2^d) codes.

    Built by running marching cubes (Lorensen and Cline's table; marching squares in 2D) on each configuration of
    one block. A configuration and its complement share one triangulation, as in the classic table and DeepMind's:
    the one drawn for the side with at most half of the corners (skimage's Lorensen variant resolves ambiguous faces
    by the side's values, which would give complements different areas).
    """
    from skimage import measure

    ndim = len(spacing)
    corners = list(itertools.product((0, 1), repeat=ndim))
    table = np.zeros(2 ** len(corners))
    for code in range(1, len(table) - 1):
        drawn = code if bin(code).count("1") <= len(corners) // 2 else code ^ (len(table) - 1)
        block = np.zeros((2,) * ndim)
        for bit, corner in enumerate(corners):
            block[corner] = (drawn >> bit) & 1
        if ndim == 3:
            vertices, faces, _, _ = measure.marching_cubes(block, 0.5, spacing=spacing, method="lorensen")
            table[code] = measure.mesh_surface_area(vertices, faces)
        else:
            lines = measure.find_contours(block, 0.5)
            table[code] = sum(np.linalg.norm(np.diff(line * spacing, axis=0), axis=1).sum() for line in lines)
    return table


def _element_surface(mask: np.ndarray, ignore: np.ndarray | None, spacing: tuple[float, ...]):
    """(surface blocks, the weight of each block) on the block grid (shape + 1 per axis)."""
    codes = _block_codes(mask)
    surface = (codes != 0) & (codes != (1 << 2 ** mask.ndim) - 1)
    weights = element_measure_table(spacing)[codes]
    if ignore is not None:
        weights[_block_codes(ignore) != 0] = 0
    return surface, weights


def _voxel_surface(mask: np.ndarray, ignore: np.ndarray | None, spacing: tuple[float, ...]):
    """(surface voxels, weight 1 each): mask voxels with a face neighbour outside (the image border is outside)."""
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    surface = mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)
    weights = np.ones(mask.shape)
    if ignore is not None:
        weights[ndimage.binary_dilation(ignore, structure=structure)] = 0
    return surface, weights


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """The slices of the bounding box of ``mask``, grown by ``margin`` voxels within the image."""
    from scipy import ndimage

    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    return tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, mask.shape))


def _check_definition(definition: str) -> None:
    if definition not in SURFACE_DEFINITIONS:
        raise ValueError(f"Unknown surface definition {definition!r}; choose one of {', '.join(SURFACE_DEFINITIONS)}.")


def surface_distances(reference: np.ndarray, prediction: np.ndarray, spacing, definition: str = "element",
                      ignore: np.ndarray | None = None, crop: bool = True):
    """Directed surface distances and weights of two non-empty boolean masks.

    Returns ``(prediction to reference distances, their weights, reference to prediction distances, their
    weights)``, distances in mm, weights in mm² (3D) / mm (2D) for ``"element"`` and 1 per voxel for ``"voxel"``.
    Elements of weight 0 (touching ignored voxels) are left out.
    """
    from scipy import ndimage

    _check_definition(definition)
    spacing = tuple(float(s) for s in spacing)
    if crop:  # one voxel around both masks holds every surface element and every ignored voxel they touch
        box = _bounding_box(reference | prediction, margin=1)
        reference, prediction = reference[box], prediction[box]
        ignore = ignore[box] if ignore is not None else None
    surface_of = _element_surface if definition == "element" else _voxel_surface
    surface_ref, weights_ref = surface_of(reference, ignore, spacing)
    surface_pred, weights_pred = surface_of(prediction, ignore, spacing)
    to_ref = ndimage.distance_transform_edt(~surface_ref, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~surface_pred, sampling=spacing)
    counted_pred, counted_ref = surface_pred & (weights_pred > 0), surface_ref & (weights_ref > 0)
    return to_ref[counted_pred], weights_pred[counted_pred], to_pred[counted_ref], weights_ref[counted_ref]


def weighted_percentile(distances: np.ndarray, weights: np.ndarray, percent: float) -> float:
    """The smallest distance whose share of the total weight at or below it reaches ``percent``."""
    order = np.argsort(distances, kind="stable")
    cumulative = np.cumsum(weights[order]) / weights.sum()
    return float(distances[order][min(np.searchsorted(cumulative, percent / 100.0), len(order) - 1)])


def surface_metrics(reference: np.ndarray, prediction: np.ndarray, spacing, tolerance_mm: float,
                    ignore: np.ndarray | None = None, definition: str = DEFAULT_SURFACE_DEFINITION,
                    crop: bool = True) -> tuple[float, float]:
    """(HD95 in mm, NSD at ``tolerance_mm``) of two masks with voxel ``spacing`` (mm, array axis order).

    ``ignore``: voxels left out (nnU-Net's ignore label). Masks with an axis of length 1 (2D images as nnU-Net
    stores them) are measured in 2D.
    """
    _check_definition(definition)
    reference, prediction = reference.astype(bool), prediction.astype(bool)
    spacing = np.asarray(spacing, dtype=float)
    diagonal = float(np.linalg.norm(np.asarray(reference.shape) * spacing))
    if ignore is not None:
        ignore = ignore.astype(bool)
        reference, prediction = reference & ~ignore, prediction & ~ignore
    if not reference.any() and not prediction.any():
        return math.nan, math.nan
    if not reference.any() or not prediction.any():
        return diagonal, 0.0
    kept = tuple(axis for axis, n in enumerate(reference.shape) if n > 1) or (0,)
    flat = tuple(0 if n == 1 and axis not in kept else slice(None) for axis, n in enumerate(reference.shape))
    pred_to_ref, weights_pred, ref_to_pred, weights_ref = surface_distances(
        reference[flat], prediction[flat], spacing[list(kept)], definition,
        ignore[flat] if ignore is not None else None, crop)
    if pred_to_ref.size == 0 or ref_to_pred.size == 0:  # every surface element touches the ignored region
        return math.nan, math.nan
    if definition == "element":
        hd95 = max(weighted_percentile(pred_to_ref, weights_pred, HD_PERCENTILE),
                   weighted_percentile(ref_to_pred, weights_ref, HD_PERCENTILE))
    else:  # MONAI's percentile of the surface voxels' distances (linear interpolation)
        hd95 = max(np.percentile(pred_to_ref, HD_PERCENTILE), np.percentile(ref_to_pred, HD_PERCENTILE))
    within = weights_pred[pred_to_ref <= tolerance_mm].sum() + weights_ref[ref_to_pred <= tolerance_mm].sum()
    return float(hd95), float(within / (weights_pred.sum() + weights_ref.sum()))
