"""nnU-Net's default trainer (PlainConvUNet): short runs for ``nnunet-ext demo``, and a preemption-safe copy, so
that cross-validation runs of the default network are as safe on shared clusters as those of our trainers."""
from __future__ import annotations

from torch import nn

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_ext.trainers.base import DemoRunMixin, ShortRunMixin
from nnunet_ext.trainers.plain_conv_unet import default_plain_conv_unet
from nnunet_ext.trainers.preemption import PreemptionSafeMixin


class nnUNetTrainer_Smoke(ShortRunMixin, nnUNetTrainer):
    """nnU-Net's default network and recipe, 1 epoch of 2 iterations, no mirroring."""


class nnUNetTrainer_Demo(DemoRunMixin, nnUNetTrainer):
    """nnU-Net's default network and recipe with the demo's step budget."""


class nnUNetTrainerPreemptible(PreemptionSafeMixin, nnUNetTrainer):
    """nnU-Net's default trainer, unchanged, plus ``PreemptionSafeMixin``: atomic checkpoints,
    ``checkpoint_latest.pth`` every epoch, a clean stop with exit status 75 on SIGTERM/SIGUSR1 and a ``--c`` that
    survives a damaged folder. Its network is the PlainConvUNet that nnU-Net's plans describe (2D or 3D)."""

    supported_dims = (2, 3)
    reference_patch_size = (128, 128, 128)

    @classmethod
    def reference_network(cls) -> nn.Module:
        """What nnU-Net plans for a 128³ patch at isotropic spacing (1 input channel, 3 outputs, deep supervision
        on), for listings: the real network follows each dataset's plans."""
        network, _ = default_plain_conv_unet(list(cls.reference_patch_size), 1, 3, deep_supervision=True)
        return network


class nnUNetTrainerPreemptible_Smoke(ShortRunMixin, nnUNetTrainerPreemptible):
    """2 short epochs of 15 iterations, no mirroring: long enough to stop one mid-epoch in the preemption tests."""

    short_epochs = 2
    short_iterations = 15

