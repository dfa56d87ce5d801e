"""The SegFormer3D variant through nnU-Net's own console scripts: plan -> train -> predict -> resume -> validate
-> find_best_configuration, plus the clear error for a 2D configuration. They use the session's planned dataset;
the trained fold 0 is a module fixture (trained once, by the first test that needs it), so each test also runs
alone."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import PIPELINE_DATASET_ID, PIPELINE_SHAPE
from helpers import results_folder, run_command

from nnunet_ext.trainers import nnUNetTrainerSegFormer3DVariant

TRAINER = "nnUNetTrainerSegFormer3DVariant_Smoke"
DATASET = str(PIPELINE_DATASET_ID)


@pytest.fixture(scope="module")
def trained_results(nnunet_env, planned_dataset) -> Path:
    """The smoke trainer's fold 0, trained with the stock nnUNetv2_train; its results folder (the trainer's,
    holding fold_0)."""
    run_command(["nnUNetv2_train", DATASET, "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu"],
                {**nnunet_env, "nnUNet_n_proc_DA": "0"})
    return results_folder(nnunet_env, planned_dataset, TRAINER, "3d_fullres")


def test_2d_configuration_is_refused_before_anything_is_written(nnunet_env, planned_dataset):
    result = run_command(["nnUNetv2_train", DATASET, "2d", "0", "-tr", TRAINER, "-device", "cpu"], nnunet_env,
                         expect_success=False)
    assert "3D-only network" in result.stderr and "3d_fullres" in result.stderr
    assert not results_folder(nnunet_env, planned_dataset, TRAINER, "2d").exists()


def test_train_writes_checkpoint_plans_and_network_size(nnunet_env, planned_dataset, trained_results):
    results = trained_results
    assert (results / "fold_0" / "checkpoint_final.pth").is_file()

    planned = json.loads((Path(nnunet_env["nnUNet_preprocessed"]) / planned_dataset.name / "nnUNetPlans.json")
                         .read_text())["configurations"]["3d_fullres"]["patch_size"]
    trained = json.loads((results / "plans.json").read_text())["configurations"]["3d_fullres"]["patch_size"]
    assert trained == nnUNetTrainerSegFormer3DVariant.adjust_patch_size(planned)  # the predictor reads this file

    log = "".join(p.read_text() for p in (results / "fold_0").glob("training_log_*.txt"))
    assert "Network SegFormer3DVariant:" in log and "GMAC per forward pass" in log


def test_loss_is_nnunets_dice_ce_with_the_originals_aux_weight(nnunet_env, planned_dataset, monkeypatch):
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(variable, nnunet_env[variable])
    from nnunetv2.run.run_training import get_trainer_from_args
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss

    trainer = get_trainer_from_args(DATASET, "3d_fullres", 0, TRAINER, device=torch.device("cpu"))
    loss = trainer._build_loss()
    assert loss.weight_factors == (1.0, 0.3)  # nnU-Net's halving would switch the aux head off
    assert isinstance(loss.loss, DC_and_CE_loss)
    assert trainer._get_deep_supervision_scales() == [[1.0] * 3, [0.25] * 3]


def test_predict_writes_label_maps_of_input_geometry(nnunet_env, planned_dataset, trained_results, tmp_path):
    output = tmp_path / "predictions"
    run_command(["nnUNetv2_predict", "-i", str(planned_dataset / "imagesTs"), "-o", str(output), "-d", DATASET,
                 "-c", "3d_fullres", "-tr", TRAINER, "-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0",
                 "--disable_progress_bar"], nnunet_env)
    for reference in sorted((planned_dataset / "labelsTs").glob("*.nii.gz")):
        prediction = sitk.ReadImage(str(output / reference.name))
        expected = sitk.ReadImage(str(reference))
        assert prediction.GetSize() == expected.GetSize()
        assert np.allclose(prediction.GetSpacing(), expected.GetSpacing())
        assert np.allclose(prediction.GetOrigin(), expected.GetOrigin())
        assert np.allclose(prediction.GetDirection(), expected.GetDirection())
        assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= {0, 1, 2}


def test_predict_from_model_folder_with_probabilities(nnunet_env, planned_dataset, trained_results, tmp_path):
    output = tmp_path / "predictions"
    run_command(["nnUNetv2_predict_from_modelfolder", "-i", str(planned_dataset / "imagesTs"), "-o", str(output),
                 "-m", str(trained_results), "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1",
                 "--save_probabilities", "--disable_progress_bar"], nnunet_env)
    probabilities = np.load(next(output.glob("*.npz")))["probabilities"]
    assert probabilities.shape[0] == 3 and np.allclose(probabilities.sum(0), 1, atol=1e-3)


def test_resume_and_validate_with_npz(nnunet_env, trained_results):
    env = {**nnunet_env, "nnUNet_n_proc_DA": "0"}
    fold = trained_results / "fold_0"
    logs_before = set(fold.glob("training_log_*.txt"))
    run_command(["nnUNetv2_train", DATASET, "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu", "--c"], env)
    resumed_log = "".join(path.read_text() for path in set(fold.glob("training_log_*.txt")) - logs_before)
    assert resumed_log and "Epoch 0" not in resumed_log  # the finished run is not trained again
    run_command(["nnUNetv2_train", DATASET, "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu", "--val", "--npz"],
                env)
    validation = fold / "validation"
    assert len(list(validation.glob("*.npz"))) == 2  # 6 cases, fold 0 of 5 holds 2 out
    summary = json.loads((validation / "summary.json").read_text())
    assert set(summary["mean"]) == {"1", "2"}


def test_find_best_configuration_sees_the_trainer(nnunet_env, planned_dataset, trained_results):
    run_command(["nnUNetv2_find_best_configuration", DATASET, "-c", "3d_fullres", "-tr", TRAINER, "-f", "0",
                 "-np", "1"], nnunet_env)
    instructions = (Path(nnunet_env["nnUNet_results"]) / planned_dataset.name / "inference_instructions.txt")
    assert TRAINER in instructions.read_text()


def test_find_best_configuration_chooses_the_better_of_two_trainers_by_their_summaries(nnunet_env, planned_dataset,
                                                                                          trained_results):
    other = "nnUNetTrainer_Smoke"  # nnU-Net's default network, trained on the same fold
    run_command(["nnUNetv2_train", DATASET, "3d_fullres", "0", "-tr", other, "-device", "cpu"],
                {**nnunet_env, "nnUNet_n_proc_DA": "0"})
    run_command(["nnUNetv2_find_best_configuration", DATASET, "-c", "3d_fullres", "-tr", TRAINER, other, "-f", "0",
                 "-np", "1", "--disable_ensembling"], nnunet_env)
    dice = {trainer: json.loads((results_folder(nnunet_env, planned_dataset, trainer, "3d_fullres") / "fold_0" /
                                 "validation" / "summary.json").read_text())["foreground_mean"]["Dice"]
            for trainer in (TRAINER, other)}
    dataset_results = Path(nnunet_env["nnUNet_results"]) / planned_dataset.name
    information = json.loads((dataset_results / "inference_information.json").read_text())
    assert {key.split("__")[0] for key in information["all_results"]} == {TRAINER, other}
    [chosen] = information["best_model_or_ensemble"]["selected_model_or_models"]
    assert dice[chosen["trainer"]] == max(dice.values())
    assert chosen["trainer"] in (dataset_results / "inference_instructions.txt").read_text()


def test_ddp_training_on_two_cpu_ranks(nnunet_env, planned_dataset):
    """nnU-Net's DDP wrapper (no find_unused_parameters) with deep supervision on: every parameter must get a
    gradient in every step, or DDP raises on the second iteration."""
    harness = Path(__file__).with_name("ddp_cpu_harness.py")
    run_command([sys.executable, str(harness), DATASET, "3d_fullres", "1", TRAINER, "2"],
                {**nnunet_env, "nnUNet_n_proc_DA": "0", "MASTER_PORT": "29561"})
    fold = results_folder(nnunet_env, planned_dataset, TRAINER, "3d_fullres") / "fold_1"
    assert (fold / "checkpoint_final.pth").is_file()
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "train_loss" in log


def _plan_train_all_and_predict(env, dataset_folder: Path, output: Path, *predict_options: str) -> Path:
    """Plan 3d_fullres, train fold 'all' and predict imagesTs with the stock commands; returns ``output``."""
    dataset = dataset_folder.name[7:10]
    run_command(["nnUNetv2_plan_and_preprocess", "-d", dataset, "-c", "3d_fullres", "-np", "1", "-npfp", "1"], env)
    run_command(["nnUNetv2_train", dataset, "3d_fullres", "all", "-tr", TRAINER, "-device", "cpu"],
                {**env, "nnUNet_n_proc_DA": "0"})
    run_command(["nnUNetv2_predict", "-i", str(dataset_folder / "imagesTs"), "-o", str(output), "-d", dataset,
                 "-c", "3d_fullres", "-tr", TRAINER, "-f", "all", "-device", "cpu", "-npp", "0", "-nps", "0",
                 "--disable_progress_bar", *predict_options], env)
    return output


def test_region_labels_and_two_channels_with_fold_all(nnunet_env, tmp_path):
    """Region-based training (sigmoid heads, nnU-Net's Dice + BCE) on a CT + MRI-like two-channel dataset."""
    from nnunet_ext.synthetic import make_synthetic_dataset

    folder = make_synthetic_dataset(992, dim=3, num_cases=2, num_test_cases=1, channels=2, regions=True,
                                    shape=PIPELINE_SHAPE, raw_dir=nnunet_env["nnUNet_raw"])
    output = _plan_train_all_and_predict(nnunet_env, folder, tmp_path / "predictions")
    prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(next(output.glob("*.nii.gz")))))
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(next((folder / "labelsTs").glob("*.nii.gz")))))
    assert prediction.shape == reference.shape
    assert set(np.unique(prediction)) <= {0, 1, 2}  # regions mapped back to labels via regions_class_order


def test_ignore_label_gets_no_output_head(nnunet_env, tmp_path):
    """Sparse annotation: nnU-Net's ignore label (the highest value, named 'ignore') is masked out of the loss and
    gets no output channel, so predictions hold only the real labels."""
    from nnunet_ext.synthetic import make_synthetic_dataset

    folder = make_synthetic_dataset(993, dim=3, num_cases=2, num_test_cases=1, shape=PIPELINE_SHAPE,
                                    raw_dir=nnunet_env["nnUNet_raw"])
    for label_file in (folder / "labelsTr").glob("*.nii.gz"):
        image = sitk.ReadImage(str(label_file))
        labels = sitk.GetArrayFromImage(image)
        labels[: labels.shape[0] // 3] = 3  # a third of the slices left unannotated
        sparse = sitk.GetImageFromArray(labels)
        sparse.CopyInformation(image)
        sitk.WriteImage(sparse, str(label_file))
    dataset_json = json.loads((folder / "dataset.json").read_text())
    dataset_json["labels"]["ignore"] = 3
    (folder / "dataset.json").write_text(json.dumps(dataset_json))

    output = _plan_train_all_and_predict(nnunet_env, folder, tmp_path / "predictions", "--save_probabilities")
    assert np.load(next(output.glob("*.npz")))["probabilities"].shape[0] == 3  # background, organ, tumour
    prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(next(output.glob("*.nii.gz")))))
    assert set(np.unique(prediction)) <= {0, 1, 2}
