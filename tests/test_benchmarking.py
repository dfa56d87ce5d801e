"""``nnunet-ext benchmark`` on the session's cross-validation results (``cv_training``): its tables against numbers
computed here from nnU-Net's files by other means (MONAI's surface metrics among them), the plot, nnU-Net's
ensemble selection, and the bad inputs."""
import csv
import json
import math
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image
from scipy.stats import wilcoxon

from helpers import run_command
from surface_reference import monai_hd95_nsd

from nnunet_ext import cli
from nnunet_ext.benchmarking.evaluation import label_names
from nnunet_ext.benchmarking.statistics import bootstrap_interval
from nnunet_ext.surface_metrics import surface_metrics

pytest_plugins = ("cv_training",)  # the session's trained folds (not imported here: the plug-in gets assert rewriting)

CV_DATASET_ID = 980
CV_TRAINERS = REFERENCE, OURS = ("nnUNetTrainer_Smoke", "nnUNetTrainerSegFormer3DVariant_Smoke")
CV_FOLDS = ("0", "1")


@pytest.fixture(scope="module", autouse=True)
def same_set_up(cv_trained):
    assert (cv_trained.dataset_id, cv_trained.trainers, cv_trained.folds) == (CV_DATASET_ID, CV_TRAINERS, CV_FOLDS)


@pytest.fixture(scope="module")
def benchmark(cv_trained, tmp_path_factory):
    output = tmp_path_factory.mktemp("benchmark")
    result = run_command(["nnunet-ext", "benchmark", "-d", str(CV_DATASET_ID), "-c", "3d_fullres", "-tr", OURS,
                          REFERENCE, "-o", str(output), "--reference", REFERENCE, "--ensemble", "-np", "2"],
                         cv_trained.env)  # two processes: the cases are measured in a pool
    with open(output / "benchmark.csv") as handle:
        rows = {(r["trainer"], r["label"]): r for r in csv.DictReader(handle)}
    with open(output / "benchmark_cases.csv") as handle:
        cases = {(r["trainer"], r["case"], r["label"]): r for r in csv.DictReader(handle)}
    return output, result.stdout + result.stderr, rows, cases


def _summaries(cv_trained, trainer):
    return [json.loads((cv_trained.model_folder(trainer) / f"fold_{f}" / "validation" / "summary.json").read_text())
            for f in CV_FOLDS]


def _per_case_dice(cv_trained, trainer) -> dict[str, dict[str, float]]:
    return {entry["prediction_file"].split("/")[-1][:-7]: {k: v["Dice"] for k, v in entry["metrics"].items()}
            for summary in _summaries(cv_trained, trainer) for entry in summary["metric_per_case"]}


def test_dice_is_nnunets_per_case_dice_over_both_folds(cv_trained, benchmark):
    _, _, rows, _ = benchmark
    for trainer in CV_TRAINERS:
        per_case = _per_case_dice(cv_trained, trainer)
        assert len(per_case) == 4
        for label in ("1", "2"):
            values = [d[label] for d in per_case.values() if d[label] is not None]
            assert float(rows[trainer, label]["dice_mean"]) == pytest.approx(np.mean(values), abs=1e-9)
            assert float(rows[trainer, label]["dice_std"]) == pytest.approx(np.std(values, ddof=1), abs=1e-9)
        assert rows[trainer, "1"]["label_name"] == "organ" and rows[trainer, "2"]["label_name"] == "tumour"
        assert rows[trainer, "mean"]["cases"] == "4" and rows[trainer, "mean"]["missing_folds"] == "2 3 4"


def _expected_hd95_nsd(reference: np.ndarray, prediction: np.ndarray, spacing: np.ndarray, tolerance: float):
    if not reference.any() and not prediction.any():
        return math.nan, math.nan
    if not reference.any() or not prediction.any():
        return float(np.linalg.norm(np.array(reference.shape) * spacing)), 0.0
    return monai_hd95_nsd(reference, prediction, spacing, tolerance)


def _validation_masks(cv_trained, trainer):
    """(fold, case, reference label map, predicted label map, spacing) of every validation case."""
    for fold in CV_FOLDS:
        validation = cv_trained.model_folder(trainer) / f"fold_{fold}" / "validation"
        for prediction_file in sorted(validation.glob("*.nii.gz")):
            reference_image = sitk.ReadImage(str(cv_trained.gt_folder / prediction_file.name))
            yield (fold, prediction_file.name[:-7], sitk.GetArrayFromImage(reference_image),
                   sitk.GetArrayFromImage(sitk.ReadImage(str(prediction_file))),
                   np.array(reference_image.GetSpacing()[::-1]))


@pytest.mark.parametrize("trainer", CV_TRAINERS)
def test_hd95_and_nsd_match_monai_with_subvoxels(cv_trained, benchmark, trainer):
    """The default surfaces (DeepMind's definition), measured in two processes, against MONAI's."""
    _, _, rows, cases = benchmark
    hd95_by_label = {"1": [], "2": []}
    for _, case, reference, prediction, spacing in _validation_masks(cv_trained, trainer):
        for label in ("1", "2"):
            hd95, nsd = _expected_hd95_nsd(reference == int(label), prediction == int(label), spacing, 2.0)
            row = cases[trainer, case, label]
            assert float(row["hd95_mm"]) == pytest.approx(hd95, rel=1e-5, nan_ok=True)  # MONAI: float32
            assert float(row["nsd"]) == pytest.approx(nsd, abs=1e-6, nan_ok=True)
            hd95_by_label[label].append(hd95)
    for label, values in hd95_by_label.items():
        assert float(rows[trainer, label]["hd95_mean_mm"]) == pytest.approx(np.nanmean(values), rel=1e-5)
        assert rows[trainer, label]["surface_definition"] == "element"


def test_voxel_surface_definition(cv_trained, capsys, monkeypatch, tmp_path):
    """--surface-definition voxel, in this process, one worker: the boundary voxels' figures, named as such."""
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(variable, cv_trained.env[variable])
    assert cli.main(["benchmark", "-d", str(CV_DATASET_ID), "-c", "3d_fullres", "-tr", OURS, "-o", str(tmp_path),
                     "--surface-definition", "voxel", "-np", "1"]) == 0
    with open(tmp_path / "benchmark_cases.csv") as handle:
        cases = {(r["case"], r["label"]): r for r in csv.DictReader(handle)}
    for _, case, reference, prediction, spacing in _validation_masks(cv_trained, OURS):
        for label in ("1", "2"):
            expected = surface_metrics(reference == int(label), prediction == int(label), spacing, 2.0,
                                       definition="voxel")
            row = cases[case, label]
            assert (float(row["hd95_mm"]), float(row["nsd"])) == pytest.approx(expected, nan_ok=True)
    assert "Surfaces for HD95 and NSD: boundary voxels, each weighted 1" in (tmp_path / "benchmark.md").read_text()
    assert f"{OURS} 3d_fullres: 100%" in capsys.readouterr().err  # the progress bar of the metric loop


def test_wilcoxon_and_rank_biserial_against_the_reference(cv_trained, benchmark):
    _, _, rows, _ = benchmark
    ours, reference = _per_case_dice(cv_trained, OURS), _per_case_dice(cv_trained, REFERENCE)
    assert ours.keys() == reference.keys()

    def case_mean(dice: dict) -> float:
        return float(np.nanmean([math.nan if v is None else v for v in dice.values()]))

    differences = np.array([case_mean(ours[c]) - case_mean(reference[c]) for c in sorted(ours)])
    row = rows[OURS, "mean"]
    assert row["reference"] == REFERENCE and row["paired_cases"] == "4"
    assert float(row["dice_difference"]) == pytest.approx(differences.mean(), abs=1e-9)
    assert float(row["wilcoxon_p"]) == pytest.approx(wilcoxon(differences).pvalue, rel=1e-9)
    nonzero = np.count_nonzero(differences)
    positive_rank_sum = wilcoxon(differences, alternative="greater").statistic  # R+ (scipy's statistic there)
    expected_r = 4 * positive_rank_sum / (nonzero * (nonzero + 1)) - 1
    assert float(row["rank_biserial"]) == pytest.approx(expected_r, abs=1e-9)
    assert float(row["wilcoxon_p_holm"]) == pytest.approx(float(row["wilcoxon_p"]))  # one comparison: unadjusted
    interval = bootstrap_interval(differences)
    assert (float(row["dice_difference_ci_low"]), float(row["dice_difference_ci_high"])) == pytest.approx(interval)
    assert rows[REFERENCE, "mean"]["reference"] == "reference"


def test_cost_columns(cv_trained, benchmark):
    _, _, rows, _ = benchmark
    for trainer in CV_TRAINERS:
        fold = cv_trained.model_folder(trainer) / "fold_0"
        weights = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]
        # the trained weights, each tensor once (nnU-Net's blocks register modules twice) and no norm statistics
        parameters = {(w.untyped_storage().data_ptr(), w.storage_offset()): w.numel() for name, w in weights.items()
                      if w.dtype.is_floating_point and not name.endswith(("running_mean", "running_var"))}
        assert int(rows[trainer, "mean"]["parameters"]) == sum(parameters.values())
        epochs = [float(line.split("Epoch time:")[1].split()[0])
                  for f in CV_FOLDS for log in (cv_trained.model_folder(trainer) / f"fold_{f}").glob("training_log_*")
                  for line in log.read_text().splitlines() if "Epoch time:" in line]
        assert float(rows[trainer, "mean"]["seconds_per_epoch"]) == pytest.approx(np.mean(epochs))
        assert float(rows[trainer, "mean"]["seconds_per_case"]) > 0
        assert rows[trainer, "mean"]["peak_memory_mib"] == ""  # nnU-Net does not log it
    # nnU-Net's PlainConvUNet costs several times the SegFormer3D variant at the same patch
    assert float(rows[REFERENCE, "mean"]["gflops_per_patch"]) > 3 * float(rows[OURS, "mean"]["gflops_per_patch"]) > 0
    assert rows[OURS, "mean"]["patch_size"] == "16x32x32"


def test_outputs_markdown_png_missing_folds_and_ensemble(cv_trained, benchmark):
    output, stdout, _, _ = benchmark
    text = (output / "benchmark.md").read_text()
    for heading in ("## Dice", "## HD95 (mm)", "## NSD @ 2 mm", "## Cost and paired comparison", "## Missing folds"):
        assert heading in text
    assert "Surfaces for HD95 and NSD: surface elements on the voxel faces, each weighted by its area" in text
    assert "| ΔDice vs reference | 95 % CI | p | p (Holm) |" in text
    assert f"{OURS} 3d_fullres: 100%" in stdout and f"{REFERENCE} 3d_fullres: 100%" in stdout  # progress bars
    assert f"- {OURS} 3d_fullres: fold(s) 2, 3, 4 have no validation/summary.json" in text
    assert "Missing folds" in stdout
    with Image.open(output / "benchmark.png") as image:
        assert image.format == "PNG" and image.width > 800 and image.height > 400
        assert np.unique(np.asarray(image.convert("L"))).size > 20  # drawn, not blank
    assert "Best: **" in text and f"nnUNetv2_predict -d {cv_trained.dataset_name}" in text
    assert "***All results:***" in stdout  # nnU-Net's own output, shown as it ran
    information = json.loads((cv_trained.results / "inference_information.json").read_text())
    best = information["best_model_or_ensemble"]["result_on_crossval_pre_pp"]
    assert f"Dice {best:.4f}" in text


def _benchmark_error(capsys, monkeypatch, env, *arguments: str, dataset: int = CV_DATASET_ID) -> str:
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(variable, env[variable])
    assert cli.main(["benchmark", "-d", str(dataset), "-c", "3d_fullres", "-o", "/nonexistent/out", *arguments]) == 2
    return capsys.readouterr().err


def _minimal_copy(source, destination, plans_name=None, dataset_name=None):
    """A results folder with what benchmark looks at first: plans.json, dataset.json, fold_0's summary.json."""
    (destination / "fold_0" / "validation").mkdir(parents=True)
    plans = json.loads((source / "plans.json").read_text())
    plans["plans_name"] = plans_name or plans["plans_name"]
    plans["dataset_name"] = dataset_name or plans["dataset_name"]
    (destination / "plans.json").write_text(json.dumps(plans))
    shutil.copy(source / "dataset.json", destination / "dataset.json")
    shutil.copy(source / "fold_0" / "validation" / "summary.json", destination / "fold_0" / "validation")


def test_trainer_without_results_lists_what_exists(cv_trained, capsys, monkeypatch):
    error = _benchmark_error(capsys, monkeypatch, cv_trained.env, "-tr", "nnUNetTrainerSegFormer3DVariant")
    assert "No cross-validation results of nnUNetTrainerSegFormer3DVariant 3d_fullres" in error
    assert f"{REFERENCE}__nnUNetPlans__3d_fullres (folds with validation: 0, 1)" in error


def test_mixed_plans_identifiers_are_refused(cv_trained, capsys, monkeypatch):
    other = cv_trained.results / "nnUNetTrainer_Demo__nnUNetResEncUNetMPlans__3d_fullres"
    _minimal_copy(cv_trained.model_folder(REFERENCE), other, plans_name="nnUNetResEncUNetMPlans")
    try:
        error = _benchmark_error(capsys, monkeypatch, cv_trained.env, "-tr", REFERENCE, "nnUNetTrainer_Demo")
    finally:
        shutil.rmtree(other)
    assert "Mixed plans identifiers" in error and "nnUNetResEncUNetMPlans" in error and "-p" in error


def test_results_folder_of_another_dataset_is_refused(cv_trained, capsys, monkeypatch):
    other_dataset = "Dataset981_Other"
    (cv_trained.gt_folder.parents[1] / other_dataset / "gt_segmentations").mkdir(parents=True)
    _minimal_copy(cv_trained.model_folder(REFERENCE),
                  cv_trained.results.parent / other_dataset / f"{REFERENCE}__nnUNetPlans__3d_fullres")
    error = _benchmark_error(capsys, monkeypatch, cv_trained.env, "-tr", REFERENCE, dataset=981)
    assert f"holds results of dataset {cv_trained.dataset_name}" in error and other_dataset in error


def test_label_names_use_nnunets_keys_for_labels_and_regions():
    from nnunetv2.evaluation.evaluate_predictions import key_to_label_or_region

    assert label_names({"labels": {"background": 0, "organ": 1, "tumour": 2, "ignore": 3}}) == {
        "1": "organ", "2": "tumour"}
    regions = label_names({"labels": {"background": 0, "organ": [1, 2], "tumour": [2]}})
    assert regions == {"(1, 2)": "organ", "(2,)": "tumour"}
    assert [key_to_label_or_region(k) for k in regions] == [(1, 2), (2,)]
