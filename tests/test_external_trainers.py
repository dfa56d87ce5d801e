"""A user's own trainer in an ``nnUNet_extTrainer`` folder (nnU-Net's own mechanism): every subcommand that takes
``-tr`` accepts it exactly as the stock ``nnUNetv2_train`` does. It trains through ``cv`` next to one of ours (whose
folds the session's ``cv_training`` already trained), then goes through ``benchmark``, ``check`` and ``list``."""
import csv
import json
import textwrap

import pytest

from helpers import run_command

pytest_plugins = ("cv_training",)

USER_TRAINER = "nnUNetTrainerUsersOwn"
OURS = "nnUNetTrainerSegFormer3DVariant_Smoke"
USER_MODULE = f'''
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class {USER_TRAINER}(nnUNetTrainer):
    """nnU-Net's default trainer, 1 epoch of 2 iterations, no mirroring."""

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch, None
'''


@pytest.fixture(scope="module")
def user_env(cv_trained, tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("my_trainers")
    (folder / "my_trainers.py").write_text(textwrap.dedent(USER_MODULE))
    return {**cv_trained.env, "nnUNet_extTrainer": str(folder)}


@pytest.fixture(scope="module")
def cv_output(cv_trained, user_env) -> str:
    return run_command(["nnunet-ext", "cv", "-d", str(cv_trained.dataset_id), "-c", "3d_fullres", "-tr",
                        USER_TRAINER, OURS, "-f", *cv_trained.folds, "-device", "cpu"], user_env).stdout


def test_cv_trains_the_users_trainer_with_the_stock_command(cv_trained, cv_output):
    for fold in cv_trained.folds:
        assert f"nnUNetv2_train {cv_trained.dataset_id} 3d_fullres {fold} -tr {USER_TRAINER}" in cv_output
        assert f"{USER_TRAINER} 3d_fullres fold {fold}: done after" in cv_output
        folder = cv_trained.model_folder(USER_TRAINER) / f"fold_{fold}"
        assert (folder / "checkpoint_final.pth").is_file()
        assert json.loads((folder / "validation" / "summary.json").read_text())["metric_per_case"]
        assert (folder / "debug.json").is_file() and USER_TRAINER in (folder / "debug.json").read_text()


def test_benchmark_compares_it_with_ours(cv_trained, user_env, cv_output, tmp_path):
    run_command(["nnunet-ext", "benchmark", "-d", str(cv_trained.dataset_id), "-c", "3d_fullres", "-tr",
                 USER_TRAINER, OURS, "--reference", USER_TRAINER, "-f", *cv_trained.folds, "-o", str(tmp_path)],
                user_env)
    with open(tmp_path / "benchmark.csv") as handle:
        trainers = {row["trainer"] for row in csv.DictReader(handle)}
    assert {USER_TRAINER, OURS} <= trainers
    assert USER_TRAINER in (tmp_path / "benchmark.md").read_text()


def test_check_accepts_it(cv_trained, user_env):
    out = run_command(["nnunet-ext", "check", "-d", str(cv_trained.dataset_id), "-c", "3d_fullres", "-tr",
                       USER_TRAINER], user_env).stdout
    assert f"ok  {USER_TRAINER} can train and predict configuration '3d_fullres'" in out
    report = json.loads(run_command(["nnunet-ext", "check", "-d", str(cv_trained.dataset_id), "-c", "3d_fullres",
                                     "-tr", USER_TRAINER, "--json"], user_env).stdout)
    checks = {check["check"]: check for check in report["checks"]}
    assert report["ok"] and checks["configuration"]["trainer"] == USER_TRAINER
    assert checks["memory"]["status"] == "unchecked"  # a plain nnUNetTrainer subclass has no memory model


def test_list_shows_it_with_its_folder(user_env):
    out = run_command(["nnunet-ext", "list"], user_env).stdout
    row = next(line for line in out.splitlines() if line.startswith(USER_TRAINER + " "))
    assert user_env["nnUNet_extTrainer"] in row and "nnUNet_extTrainer" in row
    assert "nnUNetTrainerSegFormer3DVariant " in out  # ours still listed


def test_a_name_nobody_provides_names_the_folders_searched(cv_trained, user_env):
    result = run_command(["nnunet-ext", "cv", "-d", str(cv_trained.dataset_id), "-c", "3d_fullres", "-tr",
                          "nnUNetTrainerNobodyHasIt", "-f", "0", "--dry-run"], user_env, expect_success=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Unknown trainer 'nnUNetTrainerNobodyHasIt'" in result.stderr
    assert user_env["nnUNet_extTrainer"] in result.stderr and USER_TRAINER in result.stderr
    assert "nnUNetTrainerSegFormer3DVariant" in result.stderr
