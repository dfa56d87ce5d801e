"""The architecture contract of TinyUNet, and the entry point that makes its trainers visible to nnU-Net."""
from importlib.metadata import entry_points

import pytest
import torch
from torch import nn

from nnunet_tinyunet.network import TinyUNet


@pytest.mark.parametrize("conv_op, size", [(nn.Conv3d, (5, 13, 17)), (nn.Conv2d, (30, 9))])
def test_any_size_and_deep_supervision_outputs_match_the_scales(conv_op, size):
    torch.manual_seed(0)
    network = TinyUNet(2, 3, deep_supervision=True, conv_op=conv_op)
    outputs = network(torch.randn(1, 2, *size))
    expected = [[round(s * scale) for s, scale in zip(size, scales)]
                for scales in TinyUNet.deep_supervision_scales(size)]  # how nnU-Net resizes the targets
    assert [list(o.shape[2:]) for o in outputs] == expected and expected[0] == list(size)

    sum(o.float().mean() for o in outputs).backward()
    assert all(p.grad is not None for p in network.parameters())  # no unused parameter (DDP)

    network.decoder.deep_supervision = False  # what nnU-Net's set_deep_supervision_enabled(False) does
    assert network(torch.randn(1, 2, *size)).shape == (1, 3, *size)


def test_trainers_are_declared_under_nnunet_exts_entry_point_group():
    from nnunet_ext.plugins import trainers_exported_by

    declared = [ep for ep in entry_points(group="nnunet_ext.trainers") if ep.value == "nnunet_tinyunet.trainers"]
    assert len(declared) == 1
    names = [cls.__name__ for cls in trainers_exported_by(declared[0].load())]
    assert names == ["nnUNetTrainerTinyUNet", "nnUNetTrainerTinyUNet_Smoke"]
