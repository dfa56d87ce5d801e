"""The reports of the RCC detection workflow: each case's ``report.json``, the log line per side, and
``OUT/summary.csv`` (one row per case and side) from every finished case of the output folder."""
from __future__ import annotations

import csv
import datetime
import json
import os
import platform
from pathlib import Path

import SimpleITK as sitk

from nnunet_ext.detection.cases import DetectionCase
from nnunet_ext.detection.decision import SIDES, THRESHOLD_DERIVATION, SideResult, voxel_volume_ml
from nnunet_ext.detection.models import ModelInfo
from nnunet_ext.detection.outputs import REPORT_FILE, SEGMENTATION_FILE, SUMMARY_FILE
from nnunet_ext.detection.settings import DetectionSettings

__all__ = ["SUMMARY_COLUMNS", "case_report", "side_line", "write_summary"]

SUMMARY_COLUMNS = ("case", "side", "verdict", "kidney_ml", "kidney_present", "lesions", "largest_lesion_ml",
                   "total_lesion_ml", "max_mean_probability", "picture")


def case_report(case: DetectionCase, input_info: dict, reference: sitk.Image, settings: DetectionSettings,
                tumor_model: ModelInfo, kidney_model: ModelInfo | None, midline: float, midline_method: str,
                sides: dict[str, SideResult]) -> dict:
    """The content of a case's report.json: input, image geometry, models, settings, midline, the sides' verdicts
    and lesions, and the versions of the software."""
    return {
        "case": case.name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "input": input_info,
        "image": {"size_xyz": list(reference.GetSize()), "spacing_xyz_mm": list(reference.GetSpacing()),
                  "origin_mm": list(reference.GetOrigin()), "direction": list(reference.GetDirection()),
                  "voxel_ml": voxel_volume_ml(reference)},
        "coordinates": "patient coordinates are ITK/DICOM LPS in mm (+x patient left, +y posterior, +z superior); "
                       "voxel coordinates are ITK indices (x = column, y = row, z = slice) of the input image",
        "model": tumor_model.describe(),
        "kidney_model": kidney_model.describe() if kidney_model else None,
        "labels": {"kidney": settings.kidney_label, "tumour": settings.tumor_label,
                   "segmentation_file": {"1": "kidney", "2": "tumour"}},
        "thresholds": {"kidney_min_ml": settings.kidney_min_ml, "tumor_min_ml": settings.tumor_min_ml,
                       "derivation": THRESHOLD_DERIVATION},
        "prediction": {"device": settings.device, "mirroring": settings.use_mirroring,
                       "crop_margin_mm": settings.crop_margin_mm if kidney_model else None},
        "midline": {"x_mm": round(midline, 2), "method": midline_method},
        "segmentation": SEGMENTATION_FILE,
        "sides": {side: _side_dict(result) for side, result in sides.items()},
        "versions": _versions(),
    }


def _side_dict(result: SideResult) -> dict:
    return {"side": result.side, "verdict": result.verdict, "kidney_ml": result.kidney_ml,
            "kidney_present": result.kidney_present, "lesions": [vars(lesion) for lesion in result.lesions],
            "picture": result.picture}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("nnunet-ext", "nnunetv2", "torch", "SimpleITK", "numpy", "scipy", "pillow"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def side_line(side: dict) -> str:
    """One side of a report (its dict in report.json) as a line of the log."""
    counted = [lesion for lesion in side["lesions"] if lesion["counted"]]
    volumes = ", ".join(f"{lesion['volume_ml']:.3g} mL" for lesion in counted)
    lesions = f", {len(counted)} lesion(s) {volumes}" if counted else ""
    return f"{side['verdict']} (kidney {side['kidney_ml']:.1f} mL{lesions})"


def _summary_row(case: str, side: dict) -> dict:
    counted = [lesion for lesion in side["lesions"] if lesion["counted"]]
    probabilities = [lesion["mean_probability"] for lesion in counted if lesion["mean_probability"] is not None]
    return {"case": case, "side": side["side"], "verdict": side["verdict"],
            "kidney_ml": side["kidney_ml"], "kidney_present": side["kidney_present"], "lesions": len(counted),
            "largest_lesion_ml": max((lesion["volume_ml"] for lesion in counted), default=0.0),
            "total_lesion_ml": round(float(sum(lesion["volume_ml"] for lesion in counted)), 4),
            "max_mean_probability": max(probabilities, default=""),
            "picture": side["picture"]["file"] if side["picture"] else ""}


def write_summary(output_dir: Path) -> list[dict]:
    """``summary.csv`` from every complete case folder of ``output_dir`` (earlier runs' cases included)."""
    rows = []
    for report_file in sorted(output_dir.glob(f"[!.]*/{REPORT_FILE}")):
        report = json.loads(report_file.read_text())
        rows.extend(_summary_row(report["case"], report["sides"][side]) for side in SIDES)
    path = output_dir / SUMMARY_FILE
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(partial, path)
    return rows
