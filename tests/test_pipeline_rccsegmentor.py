"""RccSegmentor through nnU-Net's own console scripts on a synthetic 2D CT dataset: plan 2d -> train fold 'all'
(starting the encoder from a local ImageNet-style PVTv2 checkpoint) -> predict -> resume, the clear error for a
3D configuration, and the recipe of the published-FEM trainer. The planned dataset and the trained fold are module
fixtures (dataset_2d, trained_results), so each test also runs alone."""
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import PIPELINE_DATASET_ID
from helpers import results_folder, run_command

from nnunet_ext.trainers.rccsegmentor import PRETRAINED_WEIGHTS_VARIABLE

DATASET_ID = 950
TRAINER = "nnUNetTrainerRccSegmentorLight_Smoke"


@pytest.fixture(scope="module")
def dataset_2d(nnunet_env) -> Path:
    """Two training slices and one held-out slice of 64x64, planned and preprocessed for 2d."""
    from nnunet_ext.synthetic import make_synthetic_dataset

    folder = make_synthetic_dataset(DATASET_ID, dim=2, num_cases=2, num_test_cases=1, shape=(64, 64),
                                    raw_dir=nnunet_env["nnUNet_raw"])
    run_command(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "2d", "-np", "1", "-npfp", "1"],
                nnunet_env)
    return folder


@pytest.fixture(scope="module")
def imagenet_checkpoint(tmp_path_factory) -> Path:
    """A PVTv2-b0 ImageNet classifier checkpoint (3 input channels, 1000-class head) made by timm, on disk."""
    import timm

    path = tmp_path_factory.mktemp("weights") / "pvt_v2_b0_in1k.pth"
    torch.save(timm.create_model("pvt_v2_b0", pretrained=False).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def trained_results(nnunet_env, dataset_2d, imagenet_checkpoint) -> Path:
    """The smoke trainer's fold 'all', trained with the stock nnUNetv2_train from the ImageNet checkpoint; its
    results folder (the trainer's, holding fold_all)."""
    run_command(["nnUNetv2_train", str(DATASET_ID), "2d", "all", "-tr", TRAINER, "-device", "cpu"],
                {**nnunet_env, "nnUNet_n_proc_DA": "0", PRETRAINED_WEIGHTS_VARIABLE: str(imagenet_checkpoint)})
    return results_folder(nnunet_env, dataset_2d, TRAINER, "2d")


def test_3d_configuration_is_refused_naming_2d(nnunet_env, planned_dataset):
    """The session's 3D dataset, planned for 2d and 3d_fullres: the 3D configuration fails before anything is
    written, naming the 2D one."""
    result = run_command(["nnUNetv2_train", str(PIPELINE_DATASET_ID), "3d_fullres", "0", "-tr", TRAINER,
                          "-device", "cpu"], nnunet_env, expect_success=False)
    assert "2D-only network" in result.stderr and "instead: 2d" in result.stderr
    assert not (Path(nnunet_env["nnUNet_results"]) / planned_dataset.name / f"{TRAINER}__nnUNetPlans__3d_fullres"
                ).exists()


def test_train_starts_from_local_imagenet_weights(trained_results, imagenet_checkpoint):
    results = trained_results
    assert (results / "fold_all" / "checkpoint_final.pth").is_file()
    log = "".join(p.read_text() for p in (results / "fold_all").glob("training_log_*.txt"))
    assert f"tensors of ImageNet weights from {imagenet_checkpoint}" in log
    assert "Network RccSegmentorLight:" in log and "GMAC per forward pass" in log
    patch = json.loads((results / "plans.json").read_text())["configurations"]["2d"]["patch_size"]
    assert all(p % 32 == 0 for p in patch)  # the predictor reads this file


def test_predict_writes_label_maps_of_input_geometry(nnunet_env, dataset_2d, trained_results, tmp_path):
    output = tmp_path / "predictions"
    run_command(["nnUNetv2_predict", "-i", str(dataset_2d / "imagesTs"), "-o", str(output), "-d", str(DATASET_ID),
                 "-c", "2d", "-tr", TRAINER, "-f", "all", "-device", "cpu", "-npp", "0", "-nps", "0",
                 "--save_probabilities", "--disable_progress_bar"], nnunet_env)
    references = sorted((dataset_2d / "labelsTs").glob("*.nii.gz"))
    assert references
    for reference in references:
        prediction = sitk.ReadImage(str(output / reference.name))
        assert prediction.GetSize() == sitk.ReadImage(str(reference)).GetSize()
        assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= {0, 1, 2}
    probabilities = np.load(next(output.glob("*.npz")))["probabilities"]
    assert probabilities.shape[0] == 3 and np.allclose(probabilities.sum(0), 1, atol=1e-3)


def test_resume_keeps_the_trained_weights(nnunet_env, trained_results):
    fold = trained_results / "fold_all"
    trained = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]
    # resuming restores the checkpoint and neither reads nor needs the ImageNet file
    run_command(["nnUNetv2_train", str(DATASET_ID), "2d", "all", "-tr", TRAINER, "-device", "cpu", "--c"],
                {**nnunet_env, "nnUNet_n_proc_DA": "0", PRETRAINED_WEIGHTS_VARIABLE: "/nonexistent/weights.pth"})
    resumed = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]
    assert resumed.keys() == trained.keys()
    assert all(torch.equal(resumed[k], trained[k]) for k in trained)


def test_published_fem_trainer_recipe(nnunet_env, dataset_2d, monkeypatch):
    """nnU-Net's default optimizer with the three deep-supervision outputs all weighted (DDP needs every head)."""
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_compile"):
        monkeypatch.setenv(variable, nnunet_env[variable])
    monkeypatch.delenv(PRETRAINED_WEIGHTS_VARIABLE, raising=False)
    from nnunetv2.run.run_training import get_trainer_from_args

    from nnunet_ext.architectures import RccSegmentor, RccSegmentorLight

    trainer = get_trainer_from_args(str(DATASET_ID), "2d", "all", "nnUNetTrainerRccSegmentor_Smoke",
                                    device=torch.device("cpu"))
    trainer.initialize()
    network = trainer.network
    assert type(network) is RccSegmentor and not isinstance(network, RccSegmentorLight)
    assert network.backbone_variant == "pvt_v2_b0" and network.decoder.deep_supervision
    assert isinstance(trainer.optimizer, torch.optim.SGD) and trainer.initial_lr == 1e-2
    assert trainer.loss.weight_factors == pytest.approx((4 / 7, 2 / 7, 1 / 7))
    patch = trainer.configuration_manager.patch_size
    assert trainer._get_deep_supervision_scales() == RccSegmentor.deep_supervision_scales(patch)


def test_missing_weights_file_fails_naming_the_variable(nnunet_env, dataset_2d, monkeypatch, tmp_path):
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(variable, nnunet_env[variable])
    monkeypatch.setenv(PRETRAINED_WEIGHTS_VARIABLE, str(tmp_path / "missing.pth"))
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(str(DATASET_ID), "2d", "all", TRAINER, device=torch.device("cpu"))
    with pytest.raises(FileNotFoundError, match=PRETRAINED_WEIGHTS_VARIABLE):
        trainer.initialize()
