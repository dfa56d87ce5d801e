"""The settings of an RCC detection run (``nnunet-ext detect``'s options) and their checks."""
from __future__ import annotations

import math
from dataclasses import dataclass

from nnunet_ext.detection.decision import KIDNEY_MIN_ML, TUMOR_MIN_ML
from nnunet_ext.detection.models import ModelSpec

__all__ = ["DetectionSettings", "check_settings"]

# In the two-stage setup the tumour model sees the kidneys' bounding box plus this margin.
DEFAULT_CROP_MARGIN_MM = 20.0


@dataclass
class DetectionSettings:
    """Everything ``run_detection`` needs besides the input and output folders."""

    model: ModelSpec
    kidney_model: ModelSpec | None = None
    kidney_label: int = 1
    tumor_label: int = 2
    kidney_min_ml: float = KIDNEY_MIN_ML
    tumor_min_ml: float = TUMOR_MIN_ML
    device: str = "cpu"
    use_mirroring: bool = True
    series_uid: str | None = None
    crop_margin_mm: float = DEFAULT_CROP_MARGIN_MM
    overwrite: bool = False
    skip_unreadable: bool = False


def check_settings(settings: DetectionSettings) -> None:
    """Refuse thresholds and margins that are not finite numbers >= 0, and a device torch does not see."""
    import torch

    for option, value, unit in (("--kidney-min-ml", settings.kidney_min_ml, "a volume in mL"),
                                ("--tumor-min-ml", settings.tumor_min_ml, "a volume in mL"),
                                ("--crop-margin-mm", settings.crop_margin_mm, "a distance in mm")):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{option} {value}: give a finite number >= 0 ({unit}).")
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("-device cuda, but torch sees no CUDA device; use -device cpu.")
    if settings.device == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("-device mps, but torch sees no MPS device; use -device cpu.")
