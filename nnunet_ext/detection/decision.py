"""The per-side decision of the RCC detection workflow: kidney volume per side, tumour components (lesions) and
the verdict, from a label map placed in the patient by its image's geometry.

Left and right come from patient coordinates (ITK's LPS system, where +x is the patient's left) on either side of a
midline: the body's centre on CT, else the field of view's centre.

Default thresholds. The original sums predicted probabilities (a soft voxel count) on its working grid: in-plane
pixels of about 2 mm (each slice resized to int(256 x pixel spacing) pixels, i.e. 2 mm for a 512 matrix) and
every ceil(5 mm / slice thickness)-th slice, i.e. 5 mm for the usual 1, 1.25, 2.5 and 5 mm slices. One voxel is
2 x 2 x 5 mm = 20 mm^3 = 0.02 mL, so its kidney threshold of 1000 is 1000 x 0.02 = 20 mL per side and its tumour
threshold of 50 is 50 x 0.02 = 1 mL (a sphere of 12.4 mm diameter). Here they apply to hard-label volumes: a kidney
side counts as present from 20 mL of kidney (its tumours included), a lesion from 1 mL.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

__all__ = ["KIDNEY_MIN_ML", "TUMOR_MIN_ML", "KIDNEY", "TUMOR", "SIDES", "Lesion", "SideResult", "voxel_volume_ml",
           "patient_x_mm", "midline_x_mm", "decide_sides"]

# The original's thresholds (1000 and 50 summed probabilities) times its voxel volume, 2 x 2 x 5 mm = 0.02 mL.
ORIGINAL_VOXEL_ML = 2.0 * 2.0 * 5.0 / 1000.0
KIDNEY_MIN_ML = 1000 * ORIGINAL_VOXEL_ML
TUMOR_MIN_ML = 50 * ORIGINAL_VOXEL_ML
THRESHOLD_DERIVATION = (
    "Automated_RCC_detection thresholds summed probabilities on a ~2 x 2 x 5 mm grid (0.02 mL per voxel): kidney "
    f"1000 -> {KIDNEY_MIN_ML:g} mL per side, tumour 50 -> {TUMOR_MIN_ML:g} mL per lesion")

# Label values of the segmentation this workflow writes, whatever the models' own label values are.
KIDNEY, TUMOR = 1, 2
SIDES = ("right", "left")
VERDICT_NO_KIDNEY = "no kidney"
VERDICT_NO_LESION = "no lesion"
VERDICT_LESION = "RCC-suspected lesion"
# Voxels above this (HU) form the body whose centre is the midline between the sides.
BODY_HU = -500.0


@dataclass
class Lesion:
    """One connected tumour component and the facts the report holds about it.

    Voxel coordinates are ITK indices (x, y, z) of the input image; patient coordinates are LPS in mm. The bounding
    boxes are inclusive (``max`` is the last voxel); ``bbox_mm`` is the axis-aligned box of that box's corners.
    """

    number: int
    side: str
    voxels: int
    volume_ml: float
    centroid_voxel: list[float]
    centroid_mm: list[float]
    bbox_voxel: dict[str, list[int]]
    bbox_mm: dict[str, list[float]]
    touches_kidney: bool
    mean_probability: float | None
    counted: bool = False
    reason: str = ""


@dataclass
class SideResult:
    """The verdict for one side ("right" or "left"), its kidney volume in mL and its tumour components."""

    side: str
    kidney_ml: float
    kidney_present: bool
    verdict: str
    lesions: list[Lesion] = field(default_factory=list)
    picture: str | None = None

    @property
    def counted(self) -> list[Lesion]:
        return [lesion for lesion in self.lesions if lesion.counted]


def voxel_volume_ml(reference: sitk.Image) -> float:
    return float(np.prod(reference.GetSpacing())) / 1000.0


def patient_x_mm(reference: sitk.Image, zyx_indices: np.ndarray) -> np.ndarray:
    """Patient x (LPS: + is the patient's left) of voxels given as rows of (z, y, x) array indices."""
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    scale = direction[0] * np.array(reference.GetSpacing())  # x_mm per step along ITK index axes (x, y, z)
    return reference.GetOrigin()[0] + np.asarray(zyx_indices, dtype=float)[..., ::-1] @ scale


def midline_x_mm(reference: sitk.Image, ct: np.ndarray | None = None) -> tuple[float, str]:
    """Patient x of the plane between the sides: the body's centre on CT (voxels above -500 HU), else the centre
    of the field of view. Returns the value and how it was found."""
    if ct is not None:
        body = ct > BODY_HU
        if body.any():
            # x is linear in the index, so the mean x of the body is the x of its mean index
            mean_index = [np.average(np.arange(n), weights=body.sum(axis=tuple(a for a in range(3) if a != axis)))
                          for axis, n in enumerate(body.shape)]
            return float(patient_x_mm(reference, np.array(mean_index))), "body centre"
    centre = (np.array(reference.GetSize()[::-1]) - 1) / 2.0
    return float(patient_x_mm(reference, centre)), "field-of-view centre"


def _side_of(x_mm: np.ndarray | float, midline: float) -> np.ndarray:
    """1 for the patient's left (LPS +x), 0 for the right."""
    return (np.asarray(x_mm) > midline).astype(np.int64)


def decide_sides(labels: np.ndarray, reference: sitk.Image, *, kidney_min_ml: float = KIDNEY_MIN_ML,
                 tumor_min_ml: float = TUMOR_MIN_ML, midline: float | None = None,
                 tumor_probability: np.ndarray | None = None) -> tuple[dict[str, SideResult], np.ndarray]:
    """The per-side verdict from a label map (0, 1 kidney, 2 tumour) on ``reference``'s grid.

    Args:
        labels: (z, y, x) array as SimpleITK gives it for ``reference``.
        reference: the image whose spacing, origin and direction place the voxels in the patient.
        kidney_min_ml: a side has a kidney when its kidney (tumours touching it included) reaches this volume.
        tumor_min_ml: a lesion counts from this volume.
        midline: patient x (mm) between the sides; default: the field-of-view centre.
        tumor_probability: (z, y, x) tumour probability, for each lesion's mean; None leaves it out.

    Returns the results by side ("right", "left") and the (z, y, x) map of lesion numbers (0 = none). A lesion is a
    26-connected tumour component; its side is that of its centroid; it counts when it touches a kidney voxel, its
    side has a kidney and it reaches ``tumor_min_ml``.
    """
    if midline is None:
        midline = midline_x_mm(reference)[0]
    voxel_ml = voxel_volume_ml(reference)
    kidney_voxels = np.zeros(2, dtype=np.int64)
    kidney_indices = np.argwhere(labels == KIDNEY)
    if len(kidney_indices):
        kidney_voxels += np.bincount(_side_of(patient_x_mm(reference, kidney_indices), midline), minlength=2)

    components, _ = ndimage.label(labels == TUMOR, structure=np.ones((3, 3, 3), dtype=bool))
    lesions = []
    for number, box in enumerate(ndimage.find_objects(components), start=1):
        lesions.append(_describe_lesion(number, box, components, labels, reference, midline, voxel_ml,
                                        tumor_probability))

    results = {}
    for side_index, side in enumerate(SIDES):
        own = [lesion for lesion in lesions if lesion.side == side]
        attached = sum(lesion.voxels for lesion in own if lesion.touches_kidney)
        kidney_ml = float(kidney_voxels[side_index] + attached) * voxel_ml
        present = bool(kidney_ml >= kidney_min_ml)
        for lesion in own:
            lesion.counted = present and lesion.touches_kidney and lesion.volume_ml >= tumor_min_ml
            lesion.reason = ("counted" if lesion.counted else "no kidney on this side" if not present
                             else "outside the kidney" if not lesion.touches_kidney else "below the tumour threshold")
        verdict = (VERDICT_NO_KIDNEY if not present else VERDICT_LESION if any(lesion.counted for lesion in own)
                   else VERDICT_NO_LESION)
        results[side] = SideResult(side, round(kidney_ml, 3), present, verdict, own)
    return results, components


def _describe_lesion(number: int, box: tuple[slice, ...], components: np.ndarray, labels: np.ndarray,
                     reference: sitk.Image, midline: float, voxel_ml: float,
                     probability: np.ndarray | None) -> Lesion:
    grown = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
    mask = components[grown] == number
    touches = bool((labels[grown][ndimage.binary_dilation(mask, np.ones((3, 3, 3), bool))] == KIDNEY).any())
    voxels = int(mask.sum())
    centroid_zyx = np.argwhere(mask).mean(axis=0) + [s.start for s in grown]
    low = [s.start for s in box][::-1]  # ITK index order (x, y, z)
    high = [s.stop - 1 for s in box][::-1]
    corners = np.array([reference.TransformContinuousIndexToPhysicalPoint([float(c) for c in corner])
                        for corner in np.array(np.meshgrid(*zip(low, high))).T.reshape(-1, 3)])
    mean_probability = float(probability[grown][mask].mean()) if probability is not None else None
    return Lesion(
        number=number,
        side=SIDES[int(_side_of(patient_x_mm(reference, centroid_zyx), midline))],
        voxels=voxels,
        volume_ml=round(voxels * voxel_ml, 4),
        centroid_voxel=[round(float(c), 2) for c in centroid_zyx[::-1]],
        centroid_mm=[round(float(c), 2) for c in
                     reference.TransformContinuousIndexToPhysicalPoint([float(c) for c in centroid_zyx[::-1]])],
        bbox_voxel={"min": [int(v) for v in low], "max": [int(v) for v in high]},
        bbox_mm={"min": [round(float(v), 2) for v in corners.min(0)],
                 "max": [round(float(v), 2) for v in corners.max(0)]},
        touches_kidney=touches,
        mean_probability=None if mean_probability is None else round(mean_probability, 4),
    )
