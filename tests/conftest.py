"""Shared fixtures: scrubbed environments for the stock commands and one planned synthetic dataset per session."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN_DIR = str(Path(sys.executable).parent)
PIPELINE_DATASET_ID = 991
PIPELINE_SHAPE = (24, 48, 48)


def scrubbed_environment(**extra: str) -> dict[str, str]:
    """What a new shell of the user has: no PYTHONPATH, no nnUNet_* variables, this venv's commands first."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("nnUNet") and k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = BIN_DIR + os.pathsep + env.get("PATH", "")
    env["nnUNet_compile"] = "f"
    env.update(extra)
    return env


def run_command(command: list[str], env: dict[str, str], timeout: int = 600,
                expect_success: bool = True) -> subprocess.CompletedProcess:
    """Run a console script; on an unexpected exit code fail with the tail of its output."""
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if expect_success != (result.returncode == 0):
        pytest.fail(f"{' '.join(command)} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n"
                    f"--- stderr\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="module")
def single_thread_torch():
    """Tiny tensors gain nothing from threads; on a loaded machine thread hand-offs dominate their run time."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def seeded_torch():
    import torch

    torch.manual_seed(0)


@pytest.fixture(scope="session")
def nnunet_env(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("nnunet")
    paths = {name: str(root / name) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for path in paths.values():
        os.makedirs(path)
    return scrubbed_environment(**paths, nnUNet_def_n_proc="1")


@pytest.fixture(scope="session")
def planned_dataset(nnunet_env) -> Path:
    """A 3D synthetic dataset (6 training cases) planned and preprocessed for 2d and 3d_fullres."""
    from nnunet_ext.synthetic import make_synthetic_dataset

    folder = make_synthetic_dataset(PIPELINE_DATASET_ID, dim=3, num_cases=6, num_test_cases=2,
                                    shape=PIPELINE_SHAPE, raw_dir=nnunet_env["nnUNet_raw"])
    run_command(["nnUNetv2_plan_and_preprocess", "-d", str(PIPELINE_DATASET_ID), "-c", "2d", "3d_fullres",
                 "-np", "1", "-npfp", "1"], nnunet_env)
    return folder
