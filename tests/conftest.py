"""Shared fixtures: scrubbed environments for the stock commands and one planned synthetic dataset per session.

Also how the suite is split over pytest-xdist workers (``-n`` in pyproject.toml): ``pytest_xdist_make_scheduler``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import run_command, scrubbed_environment
PIPELINE_DATASET_ID = 991
PIPELINE_SHAPE = (24, 48, 48)
# Test modules that share a session fixture: one worker runs them all, so that it is built once.
SHARED_WORKER = {"test_crossval": "cv_training", "test_benchmarking": "cv_training",
                 "test_external_trainers": "cv_training"}
# the longest groups, started first so that the workers finish at about the same time
LONGEST_GROUPS = ("test_examples", "cv_training")


def _group(nodeid: str) -> str:
    module = Path(nodeid.split("::", 1)[0]).stem
    return SHARED_WORKER.get(module, module)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    start_order = {group: rank for rank, group in enumerate(LONGEST_GROUPS)}
    items.sort(key=lambda item: start_order.get(_group(item.nodeid), len(LONGEST_GROUPS)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """pytest-xdist (``-n`` in pyproject.toml) gives each worker whole test modules, so that a module-scoped
    fixture (a trained model, a planned dataset) is built once, and keeps the modules of ``SHARED_WORKER``
    together. (Its own ``--dist loadgroup`` ignores the ``xdist_group`` marks with this pytest.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group(nodeid)

    return ModuleScheduling(config, log)


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
    """nnU-Net folders for the whole run, shared by the xdist workers (every test module uses its own dataset id)."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "nnunet"
    paths = {name: str(root / name) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for path in paths.values():
        os.makedirs(path, exist_ok=True)
    return scrubbed_environment(**paths, nnUNet_def_n_proc="1")


@pytest.fixture(scope="session")
def planned_dataset(nnunet_env) -> Path:
    """A 3D synthetic dataset (6 training cases) planned and preprocessed for 2d and 3d_fullres, made once per run:
    the first xdist worker to need it makes it while the others wait."""
    from filelock import FileLock

    from nnunet_ext.synthetic import find_dataset_folder, make_synthetic_dataset

    raw = Path(nnunet_env["nnUNet_raw"])
    done = raw.parent / "planned_dataset.done"
    with FileLock(str(raw.parent / "planned_dataset.lock")):
        if not done.is_file():
            make_synthetic_dataset(PIPELINE_DATASET_ID, dim=3, num_cases=6, num_test_cases=2, shape=PIPELINE_SHAPE,
                                   raw_dir=raw)
            run_command(["nnUNetv2_plan_and_preprocess", "-d", str(PIPELINE_DATASET_ID), "-c", "2d", "3d_fullres",
                         "-np", "1", "-npfp", "1"], nnunet_env)
            done.touch()
    return find_dataset_folder(PIPELINE_DATASET_ID, raw)
