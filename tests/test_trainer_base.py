"""The shared base trainer's checks and recipe pieces, in-process (the pipeline tests cover the stock commands)."""
import pytest
import torch

from nnunet_ext.architectures import SegFormer3DVariant
from nnunet_ext.trainers import nnUNetTrainerSegFormer3DVariant
from nnunet_ext.trainers.base import UnsupportedConfigurationError
from nnunet_ext.trainers.lr_schedules import WarmupPolyLRScheduler


def _plans(**configurations: list[int]) -> dict:
    return {"plans_name": "nnUNetPlans",
            "configurations": {name: {"patch_size": patch, "architecture": {
                "network_class_name": "PlainConvUNet", "arch_kwargs": {}, "_kw_requires_import": []}}
                for name, patch in configurations.items()}}


def test_2d_configuration_error_names_the_3d_configurations():
    plans = _plans(**{"2d": [64, 64], "3d_fullres": [32, 64, 64], "3d_lowres": [32, 48, 48]})
    with pytest.raises(UnsupportedConfigurationError, match=r"3D-only.*'2d' is 2D.*3d_fullres, 3d_lowres"):
        nnUNetTrainerSegFormer3DVariant.check_configuration(plans, "2d")
    nnUNetTrainerSegFormer3DVariant.check_configuration(plans, "3d_fullres")


def test_missing_3d_configuration_says_how_to_plan_one():
    with pytest.raises(UnsupportedConfigurationError, match=r"no 3D configuration.*-c 3d_fullres"):
        nnUNetTrainerSegFormer3DVariant.check_configuration(_plans(**{"2d": [64, 64]}), "2d")


def test_unknown_configuration_lists_the_available_ones():
    with pytest.raises(UnsupportedConfigurationError, match=r"'3d_fullres' is not in the plans.*Available: 2d"):
        nnUNetTrainerSegFormer3DVariant.check_configuration(_plans(**{"2d": [64, 64]}), "3d_fullres")


def test_patch_adjustment_removes_only_the_padding_the_network_would_add():
    minimum = SegFormer3DVariant.minimum_axis_size()
    assert nnUNetTrainerSegFormer3DVariant.adjust_patch_size([4, 96, 80]) == [minimum, 96, 80]
    assert nnUNetTrainerSegFormer3DVariant.adjust_patch_size([32, 160, 208]) == [32, 160, 208]
    tiny = nnUNetTrainerSegFormer3DVariant.adjust_patch_size([1, 1, 1])
    assert SegFormer3DVariant.padded_input_size(tiny) == tiny  # nothing left to pad


def test_warmup_then_poly_schedule_follows_the_epoch_number():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = WarmupPolyLRScheduler(optimizer, initial_lr=3e-4, warmup_epochs=4, max_epochs=20)
    lrs = []
    for epoch in (0, 1, 3, 4, 12, 19, 2):  # stateless: resuming at any epoch gives the same rate
        scheduler.step(epoch)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(3e-4 / 4) and lrs[1] == pytest.approx(3e-4 / 2)
    assert lrs[2] == pytest.approx(3e-4) and lrs[3] == pytest.approx(3e-4)
    assert lrs[4] == pytest.approx(3e-4 * (1 - 8 / 16) ** 0.9)
    assert 0 < lrs[5] < lrs[4]
    assert lrs[6] == pytest.approx(3e-4 * 3 / 4)

