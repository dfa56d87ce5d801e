"""A pytest plug-in (``pytest_plugins = ("cv_training",)``) shared by test_crossval and test_benchmarking: one
synthetic dataset trained once per session through ``nnunet-ext cv`` (two trainers, folds 0 and 1)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import run_command

CV_DATASET_ID = 980
CV_SHAPE = (16, 32, 32)
CV_TRAINERS = ("nnUNetTrainer_Smoke", "nnUNetTrainerSegFormer3DVariant_Smoke")
CV_FOLDS = ("0", "1")


@dataclass(frozen=True)
class TrainedCrossValidation:
    env: dict[str, str]
    dataset_name: str
    first_run_output: str
    dataset_id: int = CV_DATASET_ID
    trainers: tuple[str, str] = CV_TRAINERS  # (reference, ours)
    folds: tuple[str, ...] = CV_FOLDS

    @property
    def results(self) -> Path:
        return Path(self.env["nnUNet_results"]) / self.dataset_name

    def model_folder(self, trainer: str, plans: str = "nnUNetPlans") -> Path:
        return self.results / f"{trainer}__{plans}__3d_fullres"

    @property
    def gt_folder(self) -> Path:
        return Path(self.env["nnUNet_preprocessed"]) / self.dataset_name / "gt_segmentations"


@pytest.fixture(scope="session")
def cv_trained(nnunet_env) -> TrainedCrossValidation:
    """8 training cases (folds 0 and 1 hold 2 validation cases each), 3d_fullres, both trainers trained by cv."""
    from nnunet_ext.synthetic import make_synthetic_dataset

    folder = make_synthetic_dataset(CV_DATASET_ID, dim=3, num_cases=8, num_test_cases=0, shape=CV_SHAPE,
                                    raw_dir=nnunet_env["nnUNet_raw"])
    run_command(["nnUNetv2_plan_and_preprocess", "-d", str(CV_DATASET_ID), "-c", "3d_fullres", "-np", "1",
                 "-npfp", "1"], nnunet_env)
    env = {**nnunet_env, "nnUNet_n_proc_DA": "0"}  # training only: preprocessing needs a positive value
    result = run_command(["nnunet-ext", "cv", "-d", str(CV_DATASET_ID), "-c", "3d_fullres", "-tr", *CV_TRAINERS,
                          "-f", *CV_FOLDS, "-device", "cpu"], env)
    return TrainedCrossValidation(env, folder.name, result.stdout)
