"""``nnunet-ext plan``: nnU-Net's planning rules with the trainer's own memory model, the keys it records, the reuse of
nnUNetPlans' preprocessed data, a training through the stock ``nnUNetv2_train -p``, and the clear errors.

The planner's rules are tested on the planner itself with median shapes chosen for each rule (the traces are
cached per planner, so each test costs a few traces of the small SegFormer3D variant); one plan and one training
run go through the console scripts."""
import json
import math
from pathlib import Path

import pytest

from conftest import PIPELINE_DATASET_ID, PIPELINE_SHAPE
from helpers import run_command

from nnunet_ext import planning
from nnunet_ext.trainers import nnUNetTrainerRECUNet_Smoke, nnUNetTrainerSegFormer3DVariant_Smoke
from nnunet_ext.trainers.base import PLANS_KEY

TRAINER = nnUNetTrainerSegFormer3DVariant_Smoke
TARGET_GB = 0.2  # below what the SegFormer3D variant needs at the dataset's full 24x48x48 image (fp32, batch 2)
PLANS = f"nnUNetPlans_SegFormer3DVariant_{TARGET_GB:g}G"
SPACING = [1.0, 1.0, 1.0]
NO_FINGERPRINT_ID = 994


@pytest.fixture(scope="module")
def preprocessed(nnunet_env, planned_dataset) -> Path:
    return Path(nnunet_env["nnUNet_preprocessed"]) / planned_dataset.name


@pytest.fixture(scope="module")
def planned(nnunet_env, planned_dataset, preprocessed):
    """``nnunet-ext plan`` through its console script; the folders of the preprocessed dataset before it ran."""
    folders_before = sorted(p.name for p in preprocessed.iterdir())
    result = run_command(["nnunet-ext", "plan", "-d", str(PIPELINE_DATASET_ID), "-tr", TRAINER.__name__,
                          "-gpu_memory_target", str(TARGET_GB), "--precision", "fp32", "--checkpointing", "off"],
                         nnunet_env)
    return result.stdout, folders_before


@pytest.fixture
def nnunet_paths(nnunet_env, monkeypatch) -> None:
    """This run's nnU-Net folders in the environment, for in-process calls of ``nnunet-ext`` code."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, nnunet_env[name])


@pytest.fixture(scope="module")
def planner(nnunet_env, planned_dataset):
    """The planner on the pipeline dataset, nnU-Net's module paths pointed at this run's folders."""
    from nnunetv2.experiment_planning.experiment_planners import default_experiment_planner

    patch = pytest.MonkeyPatch()
    for name in ("nnUNet_raw", "nnUNet_preprocessed"):
        patch.setattr(default_experiment_planner, name, nnunet_env[name])
    yield planning.ArchitectureAwarePlanner(planned_dataset.name, TRAINER, 1.0, precision="fp32",
                                            checkpointing="off")
    patch.undo()


def _plan(planner, target_gb: float, median_shape, n_voxels: float = 1e5, checkpointing: str = "off") -> dict:
    planner.UNet_vram_target_GB = planner.UNet_reference_val_3d = planner.UNet_reference_val_corresp_GB = target_gb
    planner.checkpointing = checkpointing
    return planner.get_plans_for_configuration(SPACING, median_shape, "nnUNetPlans_3d_fullres", n_voxels, {})


def _gb(planner, plan: dict, batch_size: int | None = None) -> float:
    planner._candidate.activation_checkpointing = plan[PLANS_KEY]["activation_checkpointing"]
    return planner.training_memory(plan["patch_size"], batch_size or plan["batch_size"]).peak_gb


def test_plans_key_is_the_trainers():
    assert planning.PLANS_KEY == PLANS_KEY


def test_patch_follows_the_median_shape_when_it_fits(planner):
    plan = _plan(planner, 1.0, [24, 48, 32])
    assert plan["patch_size"] == [24, 48, 32]
    assert plan[PLANS_KEY]["predicted_memory_gb"] <= 1.0


def test_shrinks_the_axis_largest_relative_to_the_median_and_keeps_its_proportions(planner):
    median = [24, 48, 48]
    big = _plan(planner, 0.25, median)
    small = _plan(planner, 0.15, median)
    assert math.prod(small["patch_size"]) < math.prod(big["patch_size"]) <= math.prod(median)
    for plan in (big, small):
        assert _gb(planner, plan) <= plan[PLANS_KEY]["gpu_memory_target_gb"]
        ratios = [p / m for p, m in zip(plan["patch_size"], median)]
        # nnU-Net shrinks one step (8 here) at a time along the largest ratio: never lopsided
        assert max(ratios) - min(ratios) <= 8 / 24 + 1e-9, plan["patch_size"]
    assert small["patch_size"] == TRAINER.adjust_patch_size(small["patch_size"])  # the network's sizes


def test_batch_size_is_the_largest_that_fits_within_nnunets_caps(planner):
    median = [16, 32, 32]
    generous = _plan(planner, 1.0, median, n_voxels=1e9)
    batch = generous["batch_size"]
    assert batch > 2
    assert _gb(planner, generous) <= 1.0 < _gb(planner, generous, batch + 1)
    # nnU-Net's 5 % rule: at most 5 % of the dataset's voxels per batch
    few_voxels = 0.05 ** -1 * math.prod(median) * 3
    assert _plan(planner, 1.0, median, n_voxels=few_voxels)["batch_size"] == 3
    # and never below 2
    assert _plan(planner, 1.0, median, n_voxels=10)["batch_size"] == 2
    # a bigger target, a bigger batch at the same patch
    larger = _plan(planner, 2.0, median, n_voxels=1e9)
    assert larger["patch_size"] == generous["patch_size"] and larger["batch_size"] > batch


def test_checkpointing_auto_only_where_it_buys_a_larger_patch(planner):
    median = [24, 48, 48]
    without = _plan(planner, 0.15, median, checkpointing="off")
    with_checkpointing = _plan(planner, 0.15, median, checkpointing="on")
    auto = _plan(planner, 0.15, median, checkpointing="auto")
    assert with_checkpointing[PLANS_KEY]["activation_checkpointing"] is True
    gains = math.prod(with_checkpointing["patch_size"]) > math.prod(without["patch_size"])
    assert auto[PLANS_KEY]["activation_checkpointing"] is gains
    assert auto["patch_size"] == (with_checkpointing if gains else without)["patch_size"]
    # where the median image fits without it, auto leaves it off
    assert _plan(planner, 1.0, [16, 32, 32], checkpointing="auto")[PLANS_KEY]["activation_checkpointing"] is False


def test_target_below_the_smallest_patch_names_the_minimum(planner):
    with pytest.raises(planning.PlanningError, match=r"too small.*smallest admissible patch .* Give at least "
                                                      r"-gpu_memory_target \d"):
        _plan(planner, 0.001, [24, 48, 48])


def test_plans_file_records_the_prediction_and_shares_nnunetplans_data(planned, preprocessed):
    stdout, folders_before = planned
    plans = json.loads((preprocessed / f"{PLANS}.json").read_text())
    reference = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    assert list(plans["configurations"]) == ["3d_fullres"]  # the 3D-only trainer: no 2d
    ours, theirs = plans["configurations"]["3d_fullres"], reference["configurations"]["3d_fullres"]
    assert ours[PLANS_KEY] == {"predicted_memory_gb": pytest.approx(ours[PLANS_KEY]["predicted_memory_gb"]),
                               "gpu_memory_target_gb": TARGET_GB, "precision": "fp32",
                               "activation_checkpointing": False}
    assert 0 < ours[PLANS_KEY]["predicted_memory_gb"] <= TARGET_GB
    assert math.prod(ours["patch_size"]) < math.prod(PIPELINE_SHAPE) and ours["batch_size"] == 2
    for key in ("data_identifier", *planning.SHARED_SETTINGS):
        assert ours[key] == theirs[key], key
    assert sorted(p.name for p in preprocessed.iterdir()) == sorted(folders_before + [f"{PLANS}.json"])
    assert f"nnUNetv2_train {PIPELINE_DATASET_ID} 3d_fullres 0 -tr {TRAINER.__name__} -p {PLANS}" in stdout
    assert "reuses the preprocessed data" in stdout and "3d_fullres" in stdout.splitlines()[1]


def test_stock_nnunetv2_train_trains_with_the_plans_and_logs_the_prediction(nnunet_env, planned, planned_dataset,
                                                                           preprocessed):
    run_command(["nnUNetv2_train", str(PIPELINE_DATASET_ID), "3d_fullres", "0", "-tr", TRAINER.__name__, "-p", PLANS,
                 "-device", "cpu"], {**nnunet_env, "nnUNet_n_proc_DA": "0"})
    results = Path(nnunet_env["nnUNet_results"]) / planned_dataset.name / f"{TRAINER.__name__}__{PLANS}__3d_fullres"
    assert (results / "fold_0" / "checkpoint_final.pth").is_file()
    planned_patch = json.loads((preprocessed / f"{PLANS}.json").read_text())["configurations"]["3d_fullres"]
    trained = json.loads((results / "plans.json").read_text())["configurations"]["3d_fullres"]
    assert trained["patch_size"] == planned_patch["patch_size"]
    log = "".join(p.read_text() for p in (results / "fold_0").glob("training_log_*.txt"))
    assert f"Predicted training memory (nnunet-ext plan): {planned_patch[PLANS_KEY]['predicted_memory_gb']:.2f} GB" \
        in log


def test_existing_plans_are_refused_without_overwrite_and_left_untouched(nnunet_paths, planned, preprocessed):
    plans_file = preprocessed / f"{PLANS}.json"
    before = plans_file.read_bytes()
    with pytest.raises(planning.PlanningError, match="exist already; left untouched.*--overwrite"):
        planning.plan(str(PIPELINE_DATASET_ID), TRAINER.__name__, gpu_memory_target_gb=TARGET_GB)
    assert plans_file.read_bytes() == before


def test_trainer_without_memory_model_and_wrong_configuration_are_refused(nnunet_paths, planned_dataset):
    with pytest.raises(planning.PlanningError, match="nnUNetTrainer has no memory model.*nnUNetTrainerExt.*"
                                                      "training_memory"):
        planning.plan(str(PIPELINE_DATASET_ID), "nnUNetTrainer")
    with pytest.raises(planning.PlanningError, match="cannot plan 3d_fullres for nnUNetTrainerRECUNet_Smoke.*-c 2d"):
        planning.ArchitectureAwarePlanner(planned_dataset.name, nnUNetTrainerRECUNet_Smoke,
                                          configurations=["3d_fullres"])


def test_dataset_without_fingerprint_says_how_to_make_one(nnunet_env, nnunet_paths):
    from nnunet_ext.synthetic import make_synthetic_dataset

    make_synthetic_dataset(NO_FINGERPRINT_ID, dim=3, num_cases=2, num_test_cases=0, shape=(16, 16, 16),
                           raw_dir=Path(nnunet_env["nnUNet_raw"]), overwrite=True)
    with pytest.raises(planning.PlanningError, match="no fingerprint.*nnUNetv2_extract_fingerprint -d 994 .*"
                                                      "nnUNetv2_plan_and_preprocess"):
        planning.plan(str(NO_FINGERPRINT_ID), TRAINER.__name__)


def test_check_reports_the_predicted_memory_and_a_target_it_exceeds(nnunet_paths, planned, preprocessed, capsys):
    from nnunet_ext.cli import main

    planned_gb = json.loads((preprocessed / f"{PLANS}.json").read_text())["configurations"]["3d_fullres"][
        PLANS_KEY]["predicted_memory_gb"]
    assert main(["check", "-d", str(PIPELINE_DATASET_ID), "-c", "3d_fullres", "-tr", TRAINER.__name__, "-p", PLANS,
                 "-gpu_memory_target", "0.05"]) == 0
    out = capsys.readouterr().out
    assert f"ok  predicted training memory {planned_gb:.2f} GB (fp32," in out  # the plan's own prediction
    assert f"!!  the predicted {planned_gb:.2f} GB exceed -gpu_memory_target 0.05 GB" in out
