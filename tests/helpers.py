"""Helpers the test modules import (``from helpers import ...``): running the stock commands in a user's clean
environment, where nnU-Net puts a trainer's results, and checks shared by the network tests."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typing import Callable

import pytest
import torch
from torch import nn

BIN_DIR = str(Path(sys.executable).parent)


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


def results_folder(env: dict[str, str], dataset_folder: Path, trainer: str, configuration: str,
                   plans: str = "nnUNetPlans") -> Path:
    """nnU-Net's results folder of ``trainer`` with ``plans`` and ``configuration`` for the dataset whose raw
    folder is ``dataset_folder``."""
    return Path(env["nnUNet_results"]) / dataset_folder.name / f"{trainer}__{plans}__{configuration}"


def assert_deep_supervision_follows_the_decoder(network: nn.Module, x: torch.Tensor, num_outputs: int) -> None:
    """``network`` returns a tensor or a list of ``num_outputs`` tensors as its ``decoder.deep_supervision`` says,
    read at call time, as nnU-Net's ``set_deep_supervision_enabled`` switches it."""
    with torch.no_grad():
        assert isinstance(network(x), torch.Tensor)
        network.decoder.deep_supervision = True
        out = network(x)
        assert isinstance(out, list) and len(out) == num_outputs
        network.decoder.deep_supervision = False
        assert isinstance(network(x), torch.Tensor)


def assert_state_dict_independent_of_deep_supervision(build: Callable[[bool], nn.Module], x: torch.Tensor) -> None:
    """The weights of ``build(True)`` load strictly into ``build(False)``, whose output is the first deep-supervision
    output: nnU-Net predicts with deep supervision off from a checkpoint trained with it on."""
    with_ds, without_ds = build(True), build(False)
    without_ds.load_state_dict(with_ds.state_dict(), strict=True)
    with_ds.eval()
    without_ds.eval()
    with torch.no_grad():
        torch.testing.assert_close(with_ds(x)[0], without_ds(x))
