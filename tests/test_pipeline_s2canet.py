"""S2CA-Net through nnU-Net's own console scripts on a BraTS-like 4-channel dataset with region labels: plan ->
train fold all -> predict -> resume, the recipe (Adam, warm-up/constant/cosine, the original's deep-supervision
weights), the patch adjustment, and the clear errors for a 2D configuration and a too-small patch. The trained
fold is a module fixture (trained once, by the first test that needs it), so each test also runs alone."""
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from helpers import results_folder, run_command

from nnunet_ext.architectures import S2CANet
from nnunet_ext.trainers.lr_schedules import WarmupConstantCosineLRScheduler

TRAINER = "nnUNetTrainerS2CANet_Smoke"
DATASET_ID = 940
SHAPE = (16, 32, 32)  # nnU-Net plans this as the patch: S2CA-Net's minimum along z


@pytest.fixture(scope="module")
def brats_like_dataset(nnunet_env) -> Path:
    """Two 4-channel cases (CT-like + three MRI-like channels) with nested region labels, planned with the stock
    command (the plans hold 2d and 3d_fullres; only 3d_fullres is preprocessed)."""
    from nnunet_ext.synthetic import make_synthetic_dataset

    folder = make_synthetic_dataset(DATASET_ID, dim=3, num_cases=2, num_test_cases=1, channels=4, regions=True,
                                    shape=SHAPE, raw_dir=nnunet_env["nnUNet_raw"])
    run_command(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "3d_fullres", "-np", "1", "-npfp",
                 "1"], nnunet_env)
    return folder


@pytest.fixture(scope="module")
def trained_fold(nnunet_env, brats_like_dataset) -> Path:
    """The smoke trainer's fold 'all', trained with the stock nnUNetv2_train; its results folder."""
    run_command(["nnUNetv2_train", str(DATASET_ID), "3d_fullres", "all", "-tr", TRAINER, "-device", "cpu"],
                {**nnunet_env, "nnUNet_n_proc_DA": "0"})
    return results_folder(nnunet_env, brats_like_dataset, TRAINER, "3d_fullres") / "fold_all"


def _write_plans_variant(env, dataset_folder: Path, name: str, patch: list[int]) -> None:
    """A copy of the planned nnUNetPlans.json whose 3d_fullres patch is ``patch`` (same preprocessed data)."""
    preprocessed = Path(env["nnUNet_preprocessed"]) / dataset_folder.name
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    plans["plans_name"] = name
    plans["configurations"]["3d_fullres"]["patch_size"] = patch
    (preprocessed / f"{name}.json").write_text(json.dumps(plans))


def _use_env(monkeypatch, env) -> None:
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(variable, env[variable])


def test_2d_configuration_and_too_small_patch_are_refused_before_anything_is_written(nnunet_env, brats_like_dataset,
                                                                                     monkeypatch):
    """What nnUNetv2_train does first (in-process here: the same call, without a second interpreter start)."""
    _use_env(monkeypatch, nnunet_env)
    from nnunetv2.run.run_training import get_trainer_from_args

    with pytest.raises(ValueError, match="3D-only network.*Use one of these configurations instead: 3d_fullres"):
        get_trainer_from_args(str(DATASET_ID), "2d", "all", TRAINER, device=torch.device("cpu"))
    assert not results_folder(nnunet_env, brats_like_dataset, TRAINER, "2d").exists()

    _write_plans_variant(nnunet_env, brats_like_dataset, "nnUNetPlansTiny", [8, 32, 32])
    with pytest.raises(ValueError, match=r"below S2CANet's minimum of 16 per axis \(minimum patch \[16, 16, 16\]\)"):
        get_trainer_from_args(str(DATASET_ID), "3d_fullres", "all", TRAINER, "nnUNetPlansTiny",
                              device=torch.device("cpu"))
    assert not results_folder(nnunet_env, brats_like_dataset, TRAINER, "3d_fullres", "nnUNetPlansTiny").exists()


def test_train_fold_all_with_regions(trained_fold):
    fold = trained_fold
    results = fold.parent
    assert (fold / "checkpoint_final.pth").is_file()
    trained_patch = json.loads((results / "plans.json").read_text())["configurations"]["3d_fullres"]["patch_size"]
    assert trained_patch == list(SHAPE)
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "Network S2CANet:" in log and "GMAC per forward pass at patch [16, 32, 32]" in log
    assert "Current learning rate: 0.001" in log  # one epoch: no warm-up epoch, the peak lr
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    # built for the plan's patch: per-plane fold convolutions of the 4 x 8 x 8 level-2 former
    assert checkpoint["network_weights"]["encoder.formers.0.fold_in.0.weight"].shape[1] == 64 * 4
    assert checkpoint["network_weights"]["encoder.formers.0.fold_in.1.weight"].shape[1] == 64 * 8


def test_recipe_adam_warmup_constant_cosine_and_the_originals_deep_supervision(nnunet_env, brats_like_dataset,
                                                                               monkeypatch):
    _use_env(monkeypatch, nnunet_env)
    from nnunetv2.run.run_training import get_trainer_from_args
    from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss

    trainer = get_trainer_from_args(str(DATASET_ID), "3d_fullres", "all", "nnUNetTrainerS2CANet",
                                    device=torch.device("cpu"))
    assert trainer.label_manager.has_regions and trainer.label_manager.num_segmentation_heads == 2
    loss = trainer._build_loss()
    assert isinstance(loss.loss, DC_and_BCE_loss)  # sigmoid per region, as the original's multi-label output
    assert loss.weight_factors == (0.8, 0.6, 0.3, 0.2)
    assert trainer._get_deep_supervision_scales() == [[1.0] * 3, [0.5] * 3, [0.25] * 3, [0.125] * 3]
    trainer.network = torch.nn.Conv3d(1, 1, 1)  # configure_optimizers needs parameters only
    optimizer, scheduler = trainer.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.defaults["lr"] == 1e-3 and optimizer.defaults["weight_decay"] == 1e-5
    assert isinstance(scheduler, WarmupConstantCosineLRScheduler)
    assert (scheduler.warmup_steps, scheduler.constant_steps) == (12, 125)  # 5 and 50 of 400 epochs, of 1000
    for epoch, lr in ((0, 1e-6), (6, 1e-6 + (1e-3 - 1e-6) / 2), (12, 1e-3), (136, 1e-3), (999, 1e-6),
                      (137 + 431, 1e-6 + (1e-3 - 1e-6) / 2)):
        scheduler.step(epoch)  # in any order: --c resumes at any epoch
        assert math.isclose(optimizer.param_groups[0]["lr"], lr, rel_tol=1e-9)


def test_planned_patch_is_rounded_to_multiples_of_8_and_logged(nnunet_env, brats_like_dataset, monkeypatch):
    _use_env(monkeypatch, nnunet_env)
    from nnunetv2.run.run_training import get_trainer_from_args

    _write_plans_variant(nnunet_env, brats_like_dataset, "nnUNetPlansOdd", [20, 28, 37])
    trainer = get_trainer_from_args(str(DATASET_ID), "3d_fullres", "all", TRAINER, "nnUNetPlansOdd",
                                    device=torch.device("cpu"))
    assert trainer.configuration_manager.patch_size == [24, 32, 40]
    network = trainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager, 4, 2)
    assert isinstance(network, S2CANet) and network.patch_size == (24, 32, 40)
    log = Path(trainer.log_file).read_text()
    assert "patch size [20, 28, 37] -> [24, 32, 40]" in log
    shutil.rmtree(results_folder(nnunet_env, brats_like_dataset, TRAINER, "3d_fullres", "nnUNetPlansOdd"))


def test_predict_region_outputs_as_labels_of_input_geometry(nnunet_env, brats_like_dataset, trained_fold, tmp_path):
    output = tmp_path / "predictions"
    run_command(["nnUNetv2_predict", "-i", str(brats_like_dataset / "imagesTs"), "-o", str(output), "-d",
                 str(DATASET_ID), "-c", "3d_fullres", "-tr", TRAINER, "-f", "all", "-device", "cpu", "-npp", "0",
                 "-nps", "0", "--disable_progress_bar"], nnunet_env)
    references = sorted((brats_like_dataset / "labelsTs").glob("*.nii.gz"))
    assert len(references) == 1
    for reference in references:
        prediction = sitk.ReadImage(str(output / reference.name))
        expected = sitk.ReadImage(str(reference))
        assert prediction.GetSize() == expected.GetSize() == SHAPE[::-1]
        assert np.allclose(prediction.GetSpacing(), expected.GetSpacing())
        assert np.allclose(prediction.GetOrigin(), expected.GetOrigin())
        assert np.allclose(prediction.GetDirection(), expected.GetDirection())
        assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= {0, 1, 2}


def test_resume_with_c(nnunet_env, trained_fold):
    fold = trained_fold
    finished = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    (fold / "validation" / "summary.json").unlink()  # the one checked below is the resumed run's
    logs_before = set(fold.glob("training_log_*.txt"))
    run_command(["nnUNetv2_train", str(DATASET_ID), "3d_fullres", "all", "-tr", TRAINER, "-device", "cpu", "--c"],
                {**nnunet_env, "nnUNet_n_proc_DA": "0"})
    # --c continued at the checkpoint's epoch (the run's last): no epoch trained again, the weights are the same
    log = "".join(path.read_text() for path in set(fold.glob("training_log_*.txt")) - logs_before)
    assert log and finished["current_epoch"] >= 1 and "Epoch 0" not in log
    resumed = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert resumed["current_epoch"] == finished["current_epoch"]
    assert all(torch.equal(resumed["network_weights"][k], v) for k, v in finished["network_weights"].items())
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert set(summary["mean"]) == {"(1, 2)", "(2,)"}  # evaluated per region
