"""The examples of examples/ run end to end on synthetic data (``--synthetic``), through the stock commands."""
from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest

from conftest import run_command, scrubbed_environment

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def example_env(tmp_path) -> dict[str, str]:
    paths = {name: str(tmp_path / name) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    return scrubbed_environment(**paths, nnUNet_def_n_proc="1", nnUNet_n_proc_DA="1")


def _run_example(name: str, env: dict[str, str], out: Path) -> subprocess.CompletedProcess:
    return run_command(["bash", str(EXAMPLES / name / "run.sh"), "--synthetic", "-o", str(out)], env, timeout=1200)


def _assert_submission(out: Path, num_test_cases: int = 2) -> None:
    table = (out / "benchmark" / "benchmark.md").read_text()
    assert "nnUNetTrainer_Smoke" in table
    assert len(list((out / "predictions").glob("*.nii.gz"))) == num_test_cases


@pytest.mark.parametrize("name, trainer", [("pancreas_segformer3d", "nnUNetTrainerSegFormer3DVariant_Smoke"),
                                           ("liver_recunet", "nnUNetTrainerRECUNet_Smoke")])
def test_example_runs_on_synthetic_data(name, trainer, example_env, tmp_path):
    out = tmp_path / "out"
    _run_example(name, example_env, out)
    _assert_submission(out)
    assert trainer in (out / "benchmark" / "benchmark.md").read_text()


def test_brats_example_writes_brats_labelled_submission(example_env, tmp_path):
    out = tmp_path / "out"
    _run_example("brats_s2canet", example_env, out)
    _assert_submission(out)
    assert len(list((out / "submission").glob("*.nii.gz"))) == 2


def test_kits_example_ends_with_detection_reports(example_env, tmp_path):
    out = tmp_path / "out"
    _run_example("kits_rccsegmentor", example_env, out)
    _assert_submission(out)
    with open(out / "detection" / "summary.csv") as file:
        rows = list(csv.DictReader(file))
    assert {row["side"] for row in rows} == {"left", "right"}


def test_example_without_data_names_the_download(example_env, tmp_path):
    result = run_command(["bash", str(EXAMPLES / "pancreas_segformer3d" / "run.sh"), str(tmp_path / "missing")],
                         example_env, expect_success=False)
    assert "Task07_Pancreas" in result.stderr and "medicaldecathlon.com" in result.stderr
    assert not any(Path(example_env["nnUNet_raw"]).glob("*")), "nothing may be written before the data is found"


def test_example_without_nnunet_folders_says_which_variable(tmp_path):
    result = run_command(["bash", str(EXAMPLES / "liver_recunet" / "run.sh"), "--synthetic"],
                         scrubbed_environment(), expect_success=False)
    assert "nnUNet_raw is not set" in result.stderr
