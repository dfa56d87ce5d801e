"""RCC detection on top of any trained nnU-Net model: ``nnunet-ext detect``.

Follows the clinical pipeline of Automated_RCC_detection (Toda et al.; github.com/Naoki-Toda/RCC_detection): contrast
CT in, kidneys first, then a tumour search in each kidney, a per-side verdict and a picture of the axial slice with
the most tumour. What differs from that notebook, and why:

* the segmentation is nnU-Net's (``nnUNetPredictor``: its preprocessing, sliding window, fold ensemble), from one
  model that predicts kidney and tumour, or two models (kidney, then tumour on a crop around the kidneys, like the
  original's 2D kidney then 3D tumour network);
* left and right come from patient coordinates (the image's direction and origin; ITK's LPS system, where +x is
  the patient's left), not from image columns, so a flipped or rotated series gets the right side;
* thresholds are volumes in mL instead of summed probabilities on one fixed grid, so they mean the same at any
  voxel size, and a lesion is one connected component, not a sum over a crop (the default thresholds' derivation
  from the original's: ``nnunet_ext.detection.decision``).

Outputs, in ``OUT/<case>/``: ``segmentation.nii.gz`` (0 background, 1 kidney, 2 tumour; the input's geometry),
``report.json`` and ``<case>_<side>.png`` for each side with a lesion; ``OUT/summary.csv`` has one row per case and
side, for every case folder in OUT. Each case is staged and moved in when complete (``nnunet_ext.detection.outputs``).
A rerun keeps the cases that have results and adds the others, and summary.csv is rewritten even when a run fails or
is interrupted (Ctrl-C, SIGTERM).

Every check runs before the first prediction: thresholds (finite, >= 0), models, every input case from its
headers (3D and scalar, the model's channels on one grid, DICOM files readable, one series chosen without a tie)
and whether the output folder can be written.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_ext import dicom
from nnunet_ext.detection.cases import DetectionCase, collect_cases, load_case
from nnunet_ext.detection.decision import KIDNEY, SIDES, TUMOR, decide_sides, midline_x_mm
from nnunet_ext.detection.models import ModelInfo, check_model, make_predictor, predict
from nnunet_ext.detection.outputs import (REPORT_FILE, SEGMENTATION_FILE, SUMMARY_FILE, cases_to_run, publish_case,
                                          staged_case_folder)
from nnunet_ext.detection.pictures import render_side_picture
from nnunet_ext.detection.reports import case_report, side_line, write_summary
from nnunet_ext.detection.settings import DetectionSettings, check_settings

__all__ = ["run_detection"]


def run_detection(input_path: str | os.PathLike, output_dir: str | os.PathLike, settings: DetectionSettings,
                  log: Callable[[str], None] = print) -> list[dict]:
    """Detect on every case of ``input_path``; writes ``output_dir/<case>/`` and ``output_dir/summary.csv`` and
    returns the summary rows. Every check of the settings, models, input cases and output folder runs before the
    first prediction. Cases that already have results are kept and skipped unless ``settings.overwrite``, so a rerun
    adds what an interrupted or failed run left out; summary.csv lists every finished case whatever happens."""
    output_dir = Path(output_dir)
    check_settings(settings)
    if settings.kidney_model is None:
        if settings.kidney_label == settings.tumor_label:
            raise ValueError(f"--kidney-label and --tumor-label are both {settings.kidney_label}; one model needs a "
                             "label for each.")
        tumor_model = check_model(settings.model, {"kidney": settings.kidney_label, "tumour": settings.tumor_label})
        kidney_model = None
    else:
        kidney_model = check_model(settings.kidney_model, {"kidney": settings.kidney_label})
        tumor_model = check_model(settings.model, {"tumour": settings.tumor_label})
        if kidney_model.num_channels != tumor_model.num_channels:
            raise ValueError(f"The kidney model takes {kidney_model.num_channels} channels, the tumour model "
                             f"{tumor_model.num_channels}; both must read the same images.")
    cases = collect_cases(input_path, tumor_model.num_channels, tumor_model.file_ending, settings.series_uid,
                          settings.skip_unreadable)
    todo = cases_to_run(output_dir, cases, settings.overwrite, log)
    dicom.require_writable_folder(output_dir)
    with dicom.stop_signals_raise():
        try:
            predictors = {role: make_predictor(model.spec, settings.device, settings.use_mirroring)
                          for role, model in (("kidney", kidney_model), ("tumour", tumor_model))
                          if model is not None and todo}
            for index, case in enumerate(todo, start=1):
                position = f"[{index}/{len(todo)}] {case.name}"
                started = time.time()
                log(f"{position}: reading {case.kind} ...")
                report = _detect_case(case, output_dir, settings, tumor_model, kidney_model, predictors, log)
                for side in SIDES:
                    log(f"{position} {side}: {side_line(report['sides'][side])}")
                log(f"{position}: done in {time.time() - started:.1f} s -> {output_dir / case.name}")
        finally:  # the cases finished so far, also after a failure or an interruption
            rows = write_summary(output_dir)
            missing = [case for case in todo if not (output_dir / case.name / REPORT_FILE).is_file()]
            log(f"Wrote {len(todo) - len(missing)} case(s) and {output_dir / SUMMARY_FILE} ({len(rows) // len(SIDES)} "
                "case(s) in all)" + (f"; {len(missing)} case(s) not done: run the same command again to add them "
                                     "(finished cases are kept)" if missing else ""))
    return rows


def _segment(images: list[sitk.Image], settings: DetectionSettings, tumor_model: ModelInfo,
             kidney_model: ModelInfo | None, predictors: dict) -> tuple[np.ndarray, np.ndarray]:
    """The case's label map (0, 1 kidney, 2 tumour) and tumour probability, both (z, y, x)."""
    channels = np.stack([sitk.GetArrayFromImage(image).astype(np.float32) for image in images])
    spacing_zyx = list(images[0].GetSpacing())[::-1]
    tumor_channel = tumor_model.probability_channel(settings.tumor_label)
    if kidney_model is None:
        segmentation, probability = predict(predictors["tumour"], channels, spacing_zyx, tumor_channel)
        kidney, tumor = segmentation == settings.kidney_label, segmentation == settings.tumor_label
    else:
        segmentation, _ = predict(predictors["kidney"], channels, spacing_zyx, None)
        kidney = segmentation == settings.kidney_label
        tumor = np.zeros_like(kidney)
        probability = np.zeros(kidney.shape, dtype=np.float32)
        if kidney.any():
            margin = [math.ceil(settings.crop_margin_mm / s) for s in spacing_zyx]
            found = np.argwhere(kidney)
            box = tuple(slice(max(lo - m, 0), min(hi + m + 1, n))
                        for lo, hi, m, n in zip(found.min(0), found.max(0), margin, kidney.shape))
            crop_segmentation, crop_probability = predict(predictors["tumour"], channels[(slice(None), *box)],
                                                           spacing_zyx, tumor_channel)
            tumor[box] = crop_segmentation == settings.tumor_label
            probability[box] = crop_probability
    labels = np.where(tumor, TUMOR, np.where(kidney, KIDNEY, 0)).astype(np.uint8)
    return labels, probability


def _detect_case(case: DetectionCase, output_dir: Path, settings: DetectionSettings, tumor_model: ModelInfo,
                 kidney_model: ModelInfo | None, predictors: dict, log: Callable[[str], None]) -> dict:
    images, input_info = load_case(case, log)
    reference = images[0]
    log(f"  size {reference.GetSize()}, spacing {tuple(round(s, 3) for s in reference.GetSpacing())} mm; "
        f"segmenting ...")
    labels, probability = _segment(images, settings, tumor_model, kidney_model, predictors)
    modality = input_info.get("modality")
    if modality and modality != "CT":
        input_info["warnings"].append(f"modality {modality}: the picture's window and the body midline assume CT")
    is_ct = modality == "CT" or (not modality and tumor_model.channel_names[0].upper() == "CT")
    midline, midline_method = midline_x_mm(reference, sitk.GetArrayViewFromImage(reference) if is_ct else None)
    sides, lesion_map = decide_sides(labels, reference, kidney_min_ml=settings.kidney_min_ml,
                                     tumor_min_ml=settings.tumor_min_ml, midline=midline,
                                     tumor_probability=probability)

    with staged_case_folder(output_dir, case.name) as staging:
        label_image = sitk.GetImageFromArray(labels)
        label_image.CopyInformation(reference)
        sitk.WriteImage(label_image, str(staging / SEGMENTATION_FILE), useCompression=True)
        lesion_image = sitk.GetImageFromArray(lesion_map.astype(np.int32))
        lesion_image.CopyInformation(reference)
        for side in SIDES:
            result = sides[side]
            if result.counted:
                largest = max(result.counted, key=lambda lesion: lesion.volume_ml)
                title = [f"{case.name}: {side} kidney", f"{len(result.counted)} lesion(s), largest "
                         f"{largest.volume_ml:.3g} mL" + (f", p {largest.mean_probability:.2f}"
                                                          if largest.mean_probability is not None else "")]
                result.picture = render_side_picture(reference, label_image, lesion_image,
                                                     [lesion.number for lesion in result.counted],
                                                     staging / f"{case.name}_{side}.png", title)
        report = case_report(case, input_info, reference, settings, tumor_model, kidney_model, midline,
                             midline_method, sides)
        (staging / REPORT_FILE).write_text(json.dumps(report, indent=2))
        publish_case(staging, output_dir / case.name)
    return report
