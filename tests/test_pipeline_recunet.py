"""REC-UNet through nnU-Net's own console scripts on a 2D liver-with-tumour dataset with region labels
(liver = {liver, tumour}, tumour = {tumour}): plan -> train fold all -> predict -> resume, the recipe, and the clear
error for a 3D configuration. The trained fold is a module fixture (trained_fold), so each test also runs alone."""
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import PIPELINE_DATASET_ID
from helpers import results_folder, run_command

from nnunet_ext.architectures import RECUNet
from nnunet_ext.architectures.profiling import count_parameters
from nnunet_ext.architectures.recunet import ORIGINAL_FEATURES
from nnunet_ext.trainers.lr_schedules import TwoPhaseLRScheduler
from nnunet_ext.trainers.recunet import nnUNetTrainerRECUNet

TRAINER = "nnUNetTrainerRECUNet_Smoke"
DATASET_ID = 960
SHAPE_2D = (64, 64)


@pytest.fixture(scope="module")
def liver_dataset(nnunet_env) -> Path:
    """Three 2D CT-like slices with region labels, planned and preprocessed for 2d with the stock command."""
    from nnunet_ext.synthetic import make_synthetic_dataset

    folder = make_synthetic_dataset(DATASET_ID, dim=2, num_cases=3, num_test_cases=2, regions=True,
                                    shape=SHAPE_2D, raw_dir=nnunet_env["nnUNet_raw"], name="LiverTumour2D")
    run_command(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "2d", "-np", "1", "-npfp", "1"],
                nnunet_env)
    return folder


@pytest.fixture(scope="module")
def trained_fold(nnunet_env, liver_dataset) -> Path:
    """The smoke trainer's fold 'all', trained with the stock nnUNetv2_train; its results folder."""
    run_command(["nnUNetv2_train", str(DATASET_ID), "2d", "all", "-tr", TRAINER, "-device", "cpu"],
                {**nnunet_env, "nnUNet_n_proc_DA": "0"})
    return results_folder(nnunet_env, liver_dataset, TRAINER, "2d") / "fold_all"


def test_the_dataset_declares_liver_as_a_region_containing_the_tumour(liver_dataset):
    dataset_json = json.loads((liver_dataset / "dataset.json").read_text())
    assert dataset_json["labels"]["organ"] == [1, 2] and dataset_json["labels"]["tumour"] in (2, [2])
    assert dataset_json["regions_class_order"] == [1, 2]


def test_train_fold_all_with_regions(trained_fold):
    fold = trained_fold
    assert (fold / "checkpoint_final.pth").is_file()
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "Network RECUNet:" in log and "Current learning rate: 0.0003" in log
    assert "has no regions" not in log
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["init_args"]["configuration"] == "2d"
    # the single-head network at the smoke trainer's quarter widths: nothing but its layers
    assert sum(v.numel() for k, v in checkpoint["network_weights"].items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))) == 2_187_170


def test_recipe_adam_two_phases_sigmoid_dice_bce_without_deep_supervision(nnunet_env, liver_dataset,
                                                                          monkeypatch):
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(variable, nnunet_env[variable])
    from nnunetv2.run.run_training import get_trainer_from_args
    from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss

    trainer = get_trainer_from_args(str(DATASET_ID), "2d", 0, "nnUNetTrainerRECUNet", device=torch.device("cpu"))
    assert trainer.label_manager.has_regions and trainer.label_manager.num_segmentation_heads == 2
    assert not trainer.enable_deep_supervision and trainer._get_deep_supervision_scales() is None
    assert isinstance(trainer._build_loss(), DC_and_BCE_loss)  # no deep-supervision wrapper around it
    trainer.network = torch.nn.Conv2d(1, 1, 1)  # configure_optimizers needs parameters only
    optimizer, scheduler = trainer.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.defaults["lr"] == 3e-4 and optimizer.defaults["weight_decay"] == 0
    assert isinstance(scheduler, TwoPhaseLRScheduler) and scheduler.switch_epoch == 833  # of 1000: 100/120
    for epoch, lr in ((0, 3e-4), (832, 3e-4), (833, 1e-4), (999, 1e-4), (5, 3e-4)):
        scheduler.step(epoch)  # in any order: --c resumes at any epoch
        assert optimizer.param_groups[0]["lr"] == lr


def test_predict_region_outputs_as_labels_of_input_geometry(nnunet_env, liver_dataset, trained_fold, tmp_path):
    output = tmp_path / "predictions"
    run_command(["nnUNetv2_predict", "-i", str(liver_dataset / "imagesTs"), "-o", str(output), "-d",
                 str(DATASET_ID), "-c", "2d", "-tr", TRAINER, "-f", "all", "-device", "cpu", "-npp", "0", "-nps",
                 "0", "--save_probabilities", "--disable_progress_bar"], nnunet_env)
    references = sorted((liver_dataset / "labelsTs").glob("*.nii.gz"))
    assert len(references) == 2
    for reference in references:
        prediction = sitk.ReadImage(str(output / reference.name))
        expected = sitk.ReadImage(str(reference))
        assert prediction.GetSize() == expected.GetSize() == SHAPE_2D[::-1]
        assert np.allclose(prediction.GetSpacing(), expected.GetSpacing())
        assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= {0, 1, 2}
        probabilities = np.load(output / reference.name.replace(".nii.gz", ".npz"))["probabilities"]
        # one sigmoid per region (liver, tumour), not a softmax over labels
        assert probabilities.shape[0] == 2 and not np.allclose(probabilities.sum(0), 1, atol=1e-3)


def test_resume_with_c_continues_from_the_final_checkpoint(nnunet_env, trained_fold):
    fold = trained_fold
    (fold / "validation" / "summary.json").unlink()
    logs_before = set(fold.glob("training_log_*.txt"))
    run_command(["nnUNetv2_train", str(DATASET_ID), "2d", "all", "-tr", TRAINER, "-device", "cpu", "--c"],
                {**nnunet_env, "nnUNet_n_proc_DA": "0"})
    (new_log,) = set(fold.glob("training_log_*.txt")) - logs_before
    # the finished run is not trained again from scratch; only its validation runs again
    assert "Epoch 0" not in new_log.read_text() and "Validation complete" in new_log.read_text()
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert set(summary["mean"]) == {"(1, 2)", "(2,)"}  # evaluated per region


def test_3d_configuration_is_refused_naming_2d(nnunet_env, planned_dataset):
    """A 3D dataset planned for 2d and 3d_fullres: the 2D-only trainer refuses 3d_fullres before writing anything
    and names the configuration that works."""
    result = run_command(["nnUNetv2_train", str(PIPELINE_DATASET_ID), "3d_fullres", "0", "-tr", TRAINER,
                          "-device", "cpu"], nnunet_env, expect_success=False)
    assert "2D-only network" in result.stderr and "Use one of these configurations instead: 2d" in result.stderr
    folder = Path(nnunet_env["nnUNet_results"]) / planned_dataset.name / f"{TRAINER}__nnUNetPlans__3d_fullres"
    assert not folder.exists()


def test_full_length_trainer_builds_the_original_network():
    network = nnUNetTrainerRECUNet.build_network_architecture(None, None, 1, 2, enable_deep_supervision=False)
    assert isinstance(network, RECUNet) and network.features_per_stage == ORIGINAL_FEATURES
    assert count_parameters(network) == 34_880_186


def test_patch_sizes_are_rounded_up_to_multiples_of_16():
    assert nnUNetTrainerRECUNet.adjust_patch_size([64, 64]) == [64, 64]
    assert nnUNetTrainerRECUNet.adjust_patch_size([56, 72]) == [64, 80]
