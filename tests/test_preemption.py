"""Preemption-safe training through nnU-Net's own ``nnUNetv2_train``: a clean stop on SIGTERM mid-epoch (exit 75,
a loadable ``checkpoint_latest.pth``, ``--c`` reruns that epoch and finishes), ``--c`` on a damaged folder, on an
empty one and on another trainer's checkpoint, DDP ranks stopping together, and atomic saves under SIGKILL."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from helpers import run_command, scrubbed_environment
from nnunet_ext.trainers.preemption import (EXIT_PREEMPTED, PARTIAL_SUFFIX, CheckpointMismatchError,
                                            checkpoint_mismatch, save_atomically)

DATASET_ID = 930
DATASET_NAME = "Dataset930_Preemption"
TRAINER = "nnUNetTrainerPreemptible_Smoke"  # 2 epochs of 15 iterations
STOP_SECONDS = 20  # from the signal to the exit, on a loaded 2-core machine (typically 1-3 s)


@pytest.fixture(scope="module")
def results_env(tmp_path_factory) -> dict[str, str]:
    """A tiny 2D dataset planned for '2d'; each test copies the results it needs into its own nnUNet_results."""
    from nnunet_ext.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("preemption")
    paths = {name: str(root / name) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for path in paths.values():
        os.makedirs(path)
    env = scrubbed_environment(**paths, nnUNet_def_n_proc="1", OMP_NUM_THREADS="1")
    make_synthetic_dataset(DATASET_ID, dim=2, num_cases=6, num_test_cases=0, shape=(32, 32),
                           raw_dir=paths["nnUNet_raw"], name=DATASET_NAME.split("_", 1)[1])
    run_command(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "2d", "-np", "1", "-npfp", "1"], env)
    return env


def _fold(env: dict[str, str], trainer: str = TRAINER, fold: str = "0") -> Path:
    return Path(env["nnUNet_results"]) / DATASET_NAME / f"{trainer}__nnUNetPlans__2d" / f"fold_{fold}"


def _log(fold: Path) -> str:
    return "".join(p.read_text() for p in sorted(fold.glob("training_log_*.txt")))


def _training_env(env: dict[str, str]) -> dict[str, str]:
    return {"nnUNet_n_proc_DA": "0", **env}  # data loading in the trainer process unless a test asks for workers


def _train(env: dict[str, str], *options: str, trainer: str = TRAINER) -> subprocess.Popen:
    return subprocess.Popen(["nnUNetv2_train", str(DATASET_ID), "2d", "0", "-tr", trainer, "-device", "cpu",
                             *options], env=_training_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _wait_for_log(process: subprocess.Popen, fold: Path, text: str, skip: int = 0, timeout: float = 240) -> None:
    """Wait until ``text`` is in the training log, after its first ``skip`` characters (an earlier run's)."""
    deadline = time.monotonic() + timeout
    while not fold.exists() or text not in _log(fold)[skip:]:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no '{text}' in the training log (exit {process.poll()}):\n{process.stdout.read()[-3000:]}")
        time.sleep(0.05)


def _children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(c) for c in path.read_text().split()} if path.exists() else set()


def _stop(process: subprocess.Popen, signum: int = signal.SIGTERM) -> tuple[int, float, str]:
    """Send ``signum``; return the exit status, the seconds until the exit, and the output."""
    start = time.monotonic()
    process.send_signal(signum)
    try:
        output, _ = process.communicate(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"still running {STOP_SECONDS} s after the signal:\n{process.communicate()[0][-3000:]}")
    return process.returncode, time.monotonic() - start, output


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" not in status.read_text()  # a zombie has exited; its new parent reaps it
    except OSError:
        return False


def _epoch_of(checkpoint: Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["current_epoch"]


@pytest.fixture(scope="module")
def interrupted_run(results_env, tmp_path_factory) -> Path:
    """Fold 0 stopped by SIGTERM during epoch 1, with one data-loader worker; a copy of nnUNet_results as it was
    then (the resume test finishes the original)."""
    env = {**results_env, "nnUNet_n_proc_DA": "1"}
    fold = _fold(env)
    process = _train(env)
    _wait_for_log(process, fold, "Epoch 1")
    workers = _children(process.pid)
    status, seconds, output = _stop(process)
    assert status == EXIT_PREEMPTED, output[-3000:]
    assert seconds < STOP_SECONDS
    assert len(workers) >= 2  # a training and a validation worker
    deadline = time.monotonic() + 5
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(w) for w in workers), "data-loader workers outlived the trainer"
    snapshot = tmp_path_factory.mktemp("interrupted") / "nnUNet_results"
    shutil.copytree(env["nnUNet_results"], snapshot)
    return snapshot


def test_sigterm_mid_epoch_stops_with_75_and_continue_reruns_that_epoch(results_env, interrupted_run):
    fold = _fold(results_env)
    assert _epoch_of(fold / "checkpoint_latest.pth") == 1  # the epoch that was running, not the next one
    log = _log(fold)
    assert "Stopped by SIGTERM during epoch 1" in log and f"{DATASET_ID}" in log and "--c" in log
    assert not list(fold.glob(f"*{PARTIAL_SUFFIX}"))

    result = run_command(["nnUNetv2_train", str(DATASET_ID), "2d", "0", "-tr", TRAINER, "-device", "cpu", "--c"],
                         _training_env(results_env))
    resumed = _log(fold)[len(log):]
    assert re.findall(r": Epoch (\d+) *$", resumed, re.MULTILINE) == ["1"], result.stdout[-2000:]
    assert _epoch_of(fold / "checkpoint_final.pth") == 2
    assert not (fold / "checkpoint_latest.pth").exists()  # nnU-Net removes it after the final one
    assert (fold / "validation" / "summary.json").is_file()


def test_continue_skips_a_truncated_latest_checkpoint_with_a_warning(results_env, interrupted_run, tmp_path):
    env = {**results_env, "nnUNet_results": str(tmp_path / "results")}
    shutil.copytree(interrupted_run, env["nnUNet_results"])
    fold = _fold(env)
    latest = fold / "checkpoint_latest.pth"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    assert _epoch_of(fold / "checkpoint_best.pth") == 1
    earlier = len(_log(fold))
    process = _train(env, "--c")
    _wait_for_log(process, fold, "Epoch 1", skip=earlier)  # best holds epoch 0, so training continues with 1
    status, _, output = _stop(process)
    assert status == EXIT_PREEMPTED, output[-3000:]
    log = _log(fold)
    assert f"WARNING: cannot load {latest}" in log
    assert "--c continues from checkpoint_best.pth (epoch 1) after skipping checkpoint_latest.pth" in log
    assert _epoch_of(latest) == 1  # the stop replaced the damaged file with a complete one


def test_continue_without_checkpoint_starts_at_epoch_0_with_a_notice(results_env, tmp_path):
    env = {**results_env, "nnUNet_results": str(tmp_path / "results")}
    process = _train(env, "--c")
    fold = _fold(env)
    _wait_for_log(process, fold, "Epoch 0")
    status, _, output = _stop(process, signal.SIGUSR1)
    assert status == EXIT_PREEMPTED, output[-3000:]
    assert "no checkpoint in" in _log(fold) and "starts at epoch 0" in _log(fold)
    assert _epoch_of(fold / "checkpoint_latest.pth") == 0
    assert "Stopped by SIGUSR1 during epoch 0" in _log(fold)


def test_another_trainers_checkpoint_is_refused_and_left_alone(results_env, interrupted_run, tmp_path):
    env = {**results_env, "nnUNet_results": str(tmp_path / "results")}
    source = _fold({"nnUNet_results": str(interrupted_run)}) / "checkpoint_latest.pth"
    other = "nnUNetTrainerPreemptible"
    target = _fold({"nnUNet_results": env["nnUNet_results"]}, trainer=other)
    target.mkdir(parents=True)
    shutil.copy2(source, target / "checkpoint_latest.pth")
    before = (target / "checkpoint_latest.pth").read_bytes()
    result = run_command(["nnUNetv2_train", str(DATASET_ID), "2d", "0", "-tr", other, "-device", "cpu", "--c"],
                         _training_env(env), expect_success=False)
    assert "CheckpointMismatchError" in result.stderr
    assert f"written by trainer {TRAINER}" in result.stderr and f"this is trainer {other}" in result.stderr
    assert (target / "checkpoint_latest.pth").read_bytes() == before
    assert sorted(p.name for p in target.iterdir() if not p.name.startswith("training_log")) == \
        ["checkpoint_latest.pth"]


def test_mismatch_names_the_differing_plans_settings():
    architecture = {"network_class_name": "PlainConvUNet", "arch_kwargs": {}, "_kw_requires_import": []}
    settings = {"patch_size": [48, 48], "batch_size": 2, "architecture": architecture}
    plans = {"plans_name": "nnUNetPlans", "configurations": {"2d": settings}}
    checkpoint = {"trainer_name": "T", "init_args": {"plans": plans, "configuration": "2d"}}
    assert checkpoint_mismatch(checkpoint, "T", "nnUNetPlans", "2d", dict(settings)) is None
    reason = checkpoint_mismatch(checkpoint, "T", "nnUNetPlans", "2d", {**settings, "patch_size": [64, 64]})
    assert "patch_size: checkpoint [48, 48], plans now [64, 64]" in reason and "batch_size" not in reason
    assert "plans nnUNetResEncUNetMPlans" in checkpoint_mismatch(checkpoint, "T", "nnUNetResEncUNetMPlans", "2d", {})
    assert issubclass(CheckpointMismatchError, RuntimeError)


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_ddp_ranks_stop_together_and_rank_0_writes(results_env, tmp_path):
    """SIGTERM to one rank only: the all-reduced stop note stops both at the same iteration."""
    env = {**results_env, "nnUNet_results": str(tmp_path / "results"), "MASTER_PORT": _free_port()}
    harness = Path(__file__).with_name("ddp_cpu_harness.py")
    process = subprocess.Popen([sys.executable, str(harness), str(DATASET_ID), "2d", "0", TRAINER, "2"],
                               env=_training_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    fold = _fold(env)
    _wait_for_log(process, fold, "Epoch 1")
    ranks = [pid for pid in _children(process.pid)
             if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")]
    assert len(ranks) == 2
    os.kill(ranks[-1], signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("DDP ranks did not stop:\n" + process.communicate()[0][-3000:])
    assert "exit code 75" in output  # torch's launcher reports each rank's status
    assert _epoch_of(fold / "checkpoint_latest.pth") == 1
    assert "-num_gpus 2 --c" in _log(fold)


KILL_LOOP = textwrap.dedent("""
    import json, os, random, signal, sys, time
    import torch
    torch.set_num_threads(1)
    from nnunet_ext.trainers.preemption import PARTIAL_SUFFIX, save_atomically
    path, rounds, rng, outcomes = sys.argv[1], int(sys.argv[2]), random.Random(0), []
    for _ in range(rounds):
        pid = os.fork()
        if pid == 0:  # the saver: 6 MB checkpoints, each one self-consistent, until it is killed
            try:
                step = len(outcomes) * 1000
                while True:
                    step += 1
                    save_atomically({"step": step, "weights": torch.full((1_500_000,), float(step))}, path)
            finally:
                os._exit(1)
        while not os.path.exists(path):
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 0.2))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        mid_write = os.path.exists(path + PARTIAL_SUFFIX)
        try:
            checkpoint = torch.load(path, weights_only=False)
            loads = bool(torch.all(checkpoint["weights"] == checkpoint["step"]))
        except Exception as error:
            loads = f"{type(error).__name__}: {error}"
        outcomes.append([mid_write, loads])
    print(json.dumps(outcomes))
""")


def test_sigkill_during_saves_never_leaves_a_broken_checkpoint(tmp_path):
    """Atomic saves killed at random moments (SIGKILL, 12 times): the final name always holds a complete,
    self-consistent checkpoint, and the kills do land mid-write (a .partial file is left behind)."""
    path = tmp_path / "checkpoint_latest.pth"
    result = run_command([sys.executable, "-c", KILL_LOOP, str(path), "12"], scrubbed_environment(OMP_NUM_THREADS="1"),
                         timeout=120)
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(loads is True for _, loads in outcomes), outcomes
    assert sum(mid_write for mid_write, _ in outcomes) >= 1, outcomes
    save_atomically({"step": 0}, str(path))  # a leftover .partial is simply overwritten and renamed
    assert torch.load(path)["step"] == 0 and not Path(str(path) + PARTIAL_SUFFIX).exists()


def test_list_shows_the_preemptible_default_trainer_with_plainconvunet():
    from nnunet_ext.catalog import describe, listed_trainers
    from nnunet_ext.trainers import nnUNetTrainerPreemptible

    assert nnUNetTrainerPreemptible in listed_trainers()
    row = describe(nnUNetTrainerPreemptible)
    assert (row.network, row.dims, row.variants) == ("PlainConvUNet", "2D/3D", "_Smoke")
    assert row.parameters > 1_000_000


def test_bad_settings_name_the_environment_variable(monkeypatch):
    from nnunet_ext.trainers.preemption import _env_number, _stop_signal_numbers

    monkeypatch.setenv("NNUNET_EXT_CHECKPOINT_EVERY", "often")
    with pytest.raises(ValueError, match="NNUNET_EXT_CHECKPOINT_EVERY='often'.*whole number"):
        _env_number("NNUNET_EXT_CHECKPOINT_EVERY", 1, int)
    monkeypatch.setenv("NNUNET_EXT_STOP_SIGNALS", "usr2, SIGNOPE")
    with pytest.raises(ValueError, match="'SIGNOPE' is not a signal"):
        _stop_signal_numbers(("SIGTERM",))
    monkeypatch.setenv("NNUNET_EXT_STOP_SIGNALS", "usr2,SIGTERM")
    assert _stop_signal_numbers(("SIGTERM",)) == (signal.SIGUSR2, signal.SIGTERM)
    monkeypatch.setenv("NNUNET_EXT_STOP_SIGNALS", "none")
    assert _stop_signal_numbers(("SIGTERM",)) == ()
