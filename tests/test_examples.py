"""The examples of examples/ run end to end on synthetic data (``--synthetic``), through the stock commands.

The four examples run side by side (each in its own nnU-Net folders): much of their time is process start-up and
single-threaded work, so on two cores this takes about half the time of running them one after the other.
"""
from __future__ import annotations

import csv
import subprocess
from pathlib import Path

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
