"""The examples of examples/ run end to end on synthetic data (``--synthetic``), through the stock commands.

The four examples run side by side (each in its own nnU-Net folders): much of their time is process start-up and
single-threaded work, so on two cores this takes about half the time of running them one after the other.
"""
from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers import run_command, scrubbed_environment

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
OUR_SMOKE_TRAINERS = {
    "brats_s2canet": "nnUNetTrainerS2CANet_Smoke",
    "kits_rccsegmentor": "nnUNetTrainerRccSegmentor_Smoke",
    "liver_recunet": "nnUNetTrainerRECUNet_Smoke",
    "pancreas_segformer3d": "nnUNetTrainerSegFormer3DVariant_Smoke",
}


def _example_env(root: Path) -> dict[str, str]:
    paths = {name: str(root / name) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    # nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA): 0 would break it, so 1 worker
    return scrubbed_environment(**paths, nnUNet_def_n_proc="1", nnUNet_n_proc_DA="1")


@pytest.fixture(scope="module")
def example_outputs(tmp_path_factory) -> dict[str, Path]:
    """Run every example with --synthetic at once; fail with the tail of the log of any that fails."""
    runs = {}
    for name in OUR_SMOKE_TRAINERS:
        root = tmp_path_factory.mktemp(name)
        log = open(root / "log.txt", "w")
        process = subprocess.Popen(["bash", str(EXAMPLES / name / "run.sh"), "--synthetic", "-o", str(root / "out")],
                                   env=_example_env(root), stdout=log, stderr=subprocess.STDOUT)
        runs[name] = (process, log, root)
    failures = []
    for name, (process, log, root) in runs.items():
        try:
            returncode = process.wait(timeout=1800)
        except subprocess.TimeoutExpired:
            process.kill()
            returncode = "timeout"
        log.close()
        if returncode != 0:
            failures.append(f"{name} exited {returncode}:\n{(root / 'log.txt').read_text()[-3000:]}")
    if failures:
        pytest.fail("\n\n".join(failures))
    return {name: root / "out" for name, (_, _, root) in runs.items()}


@pytest.mark.parametrize("name", sorted(OUR_SMOKE_TRAINERS))
def test_example_compares_with_nnunet_default_and_predicts_the_test_set(name, example_outputs):
    out = example_outputs[name]
    table = (out / "benchmark" / "benchmark.md").read_text()
    assert "nnUNetTrainer_Smoke" in table and OUR_SMOKE_TRAINERS[name] in table
    assert "find_best_configuration" in table
    assert (out / "benchmark" / "benchmark.png").read_bytes().startswith(b"\x89PNG")
    assert len(list((out / "predictions").glob("*.nii.gz"))) == 2  # the synthetic data's two test cases


def _markdown_table(text: str, heading: str) -> list[dict[str, str]]:
    """The rows of the first table under the line ``heading`` of a markdown text, as {column title: cell}."""
    lines = text.splitlines()
    table = []
    for line in lines[lines.index(heading) + 1:]:
        if line.startswith("|"):
            table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif table:
            break
    header, _separator, *rows = table
    return [dict(zip(header, row)) for row in rows]


def _assert_shown_as(cell: str, value: float, digits: int) -> None:
    """``cell`` ('mean ± std' or 'mean') shows ``value`` rounded to ``digits`` decimals."""
    shown = float(cell.split(" ± ")[0])
    assert abs(shown - value) <= 0.5 * 10 ** -digits + 1e-12, f"the table shows {cell}, nnU-Net's value is {value}"


def _example_dataset(out: Path, nnunet_folder: str) -> Path:
    """The example's dataset folder in its own ``nnunet_folder`` (nnUNet_raw or nnUNet_results)."""
    [dataset] = (out.parent / nnunet_folder).glob("Dataset*")
    return dataset


@pytest.mark.parametrize("name", sorted(OUR_SMOKE_TRAINERS))
def test_example_benchmark_dice_is_nnunets_validation_summary(name, example_outputs):
    """Every Dice of the example's benchmark table is nnU-Net's own, from the validation summary.json of the same
    model (one fold with --synthetic), at the table's precision: per label or region nnU-Net's mean, the 'mean'
    column its foreground mean; and every candidate's Dice in find_best_configuration's table (the ensemble's from
    its own summary.json)."""
    from nnunetv2.evaluation.evaluate_predictions import label_or_region_to_key

    out = example_outputs[name]
    results = _example_dataset(out, "nnUNet_results")
    labels = json.loads((_example_dataset(out, "nnUNet_raw") / "dataset.json").read_text())["labels"]
    keys = {label: label_or_region_to_key(tuple(value) if isinstance(value, list) else value)
            for label, value in labels.items() if label != "background"}
    table = (out / "benchmark" / "benchmark.md").read_text()
    summaries = {}
    for row in _markdown_table(table, "## Dice"):
        model = f"{row['trainer']}__nnUNetPlans__{row['configuration']}"
        assert row["folds"] == "0"
        summaries[model] = summary = json.loads((results / model / "fold_0" / "validation" / "summary.json")
                                                .read_text())
        assert int(row["cases"]) == len(summary["metric_per_case"])
        for label, key in keys.items():
            _assert_shown_as(row[label], summary["mean"][key]["Dice"], 3)
        # the table's per-case mean over the labels equals nnU-Net's mean over the labels: no case has a NaN Dice
        assert all(np.isfinite(case["metrics"][key]["Dice"]) for case in summary["metric_per_case"]
                   for key in keys.values())
        _assert_shown_as(row["mean"], summary["foreground_mean"]["Dice"], 3)
    assert {model.split("__")[0] for model in summaries} == {"nnUNetTrainer_Smoke", OUR_SMOKE_TRAINERS[name]}

    best = _markdown_table(table, "## Best model or ensemble (nnU-Net's find_best_configuration)")
    candidates = {row["model or ensemble"]: row["Dice"] for row in best}
    assert summaries.keys() < candidates.keys()  # both models and their ensemble
    for candidate, cell in candidates.items():
        source = (results / candidate / "fold_0" / "validation" if candidate in summaries
                  else results / "ensembles" / candidate)
        _assert_shown_as(cell, json.loads((source / "summary.json").read_text())["foreground_mean"]["Dice"], 4)


@pytest.mark.parametrize("name", sorted(OUR_SMOKE_TRAINERS))
def test_example_predictions_have_the_test_images_geometry(name, example_outputs):
    """One prediction per test image, with its size, spacing, origin and direction (SimpleITK's reading)."""
    import SimpleITK as sitk

    images = sorted((_example_dataset(example_outputs[name], "nnUNet_raw") / "imagesTs").glob("*_0000.nii.gz"))
    predictions = sorted((example_outputs[name] / "predictions").glob("*.nii.gz"))
    assert [p.name for p in predictions] == [i.name.replace("_0000.nii.gz", ".nii.gz") for i in images]
    for image_file, prediction_file in zip(images, predictions):
        image, prediction = sitk.ReadImage(str(image_file)), sitk.ReadImage(str(prediction_file))
        assert prediction.GetSize() == image.GetSize()
        assert np.allclose(prediction.GetSpacing(), image.GetSpacing())
        assert np.allclose(prediction.GetOrigin(), image.GetOrigin())
        assert np.allclose(prediction.GetDirection(), image.GetDirection())


def test_brats_example_writes_brats_labelled_submission(example_outputs):
    import SimpleITK as sitk

    submission = sorted((example_outputs["brats_s2canet"] / "submission").glob("*.nii.gz"))
    assert len(submission) == 2
    labels = set(sitk.GetArrayFromImage(sitk.ReadImage(str(submission[0]))).ravel().tolist())
    assert labels <= {0, 1, 2, 4}, "BraTS scores labels 1, 2 and 4"


def test_kits_example_ends_with_detection_reports(example_outputs):
    detection = example_outputs["kits_rccsegmentor"] / "detection"
    with open(detection / "summary.csv") as file:
        rows = list(csv.DictReader(file))
    assert sorted((row["case"], row["side"]) for row in rows) == sorted(
        (case, side) for case in ("case_005", "case_006") for side in ("left", "right"))
    assert all((detection / case / "report.json").is_file() for case in ("case_005", "case_006"))


def test_example_without_data_names_the_download(tmp_path):
    env = _example_env(tmp_path)
    result = run_command(["bash", str(EXAMPLES / "pancreas_segformer3d" / "run.sh"), str(tmp_path / "missing")],
                         env, expect_success=False)
    assert "Task07_Pancreas" in result.stderr and "medicaldecathlon.com" in result.stderr
    assert not (tmp_path / "nnUNet_raw").exists(), "nothing may be written before the data is found"


def test_example_without_nnunet_folders_says_which_variable():
    result = run_command(["bash", str(EXAMPLES / "liver_recunet" / "run.sh"), "--synthetic"],
                         scrubbed_environment(), expect_success=False)
    assert "nnUNet_raw is not set" in result.stderr
