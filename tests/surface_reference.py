"""An implementation of HD95 and NSD with surface elements that shares no code with ours, for the tests: MONAI's
surface elements, their areas and distances (``use_subvoxels=True``, MONAI's re-implementation of DeepMind's
``surface-distance``), HD95 as DeepMind's ``compute_robust_hausdorff`` defines it (the smallest distance whose
cumulative share of the surface area reaches 95 %), NSD from MONAI's ``compute_surface_dice``."""
from __future__ import annotations

import warnings

import numpy as np


def _area_percentile(distances: np.ndarray, areas: np.ndarray, percent: float) -> float:
    order = np.argsort(distances)
    share = np.cumsum(areas[order]) / areas.sum()
    return float(distances[order][min(np.searchsorted(share, percent / 100), len(order) - 1)])


def monai_hd95_nsd(reference: np.ndarray, prediction: np.ndarray, spacing, tolerance_mm: float) -> tuple[float, float]:
    """(HD95, NSD) of two non-empty 2D or 3D boolean masks with ``spacing`` (mm, array axis order)."""
    import torch
    from monai.metrics import compute_surface_dice
    from monai.metrics.utils import get_edge_surface_distance

    spacing = [float(s) for s in spacing]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (edges_pred, edges_ref), (pred_to_ref, ref_to_pred), (areas_pred, areas_ref) = get_edge_surface_distance(
            torch.as_tensor(prediction), torch.as_tensor(reference), spacing=spacing, use_subvoxels=True,
            symmetric=True)
        nsd = compute_surface_dice(torch.as_tensor(prediction)[None, None].float(),
                                   torch.as_tensor(reference)[None, None].float(), [tolerance_mm],
                                   include_background=True, spacing=spacing, use_subvoxels=True)
    areas_pred = np.asarray(areas_pred, dtype=float)[np.asarray(edges_pred)]
    areas_ref = np.asarray(areas_ref, dtype=float)[np.asarray(edges_ref)]
    hd95 = max(_area_percentile(np.asarray(pred_to_ref, dtype=float), areas_pred, 95),
               _area_percentile(np.asarray(ref_to_pred, dtype=float), areas_ref, 95))
    return hd95, float(nsd.item())
