"""nnU-Net's default trainer (PlainConvUNet): short runs for ``nnunet-ext demo``, and a preemption-safe copy, so
that cross-validation runs of the default network are as safe on shared clusters as those of our trainers."""
from __future__ import annotations

from torch import nn

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_ext.trainers.base import DemoRunMixin, PreemptionSafeMixin, ShortRunMixin


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
        from dynamic_network_architectures.architectures.unet import PlainConvUNet
        from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

        patch = list(cls.reference_patch_size)
        _, strides, kernels, _, _ = get_pool_and_conv_props([1.0] * len(patch), patch, 4, 999999)
        stages = len(strides)
        return PlainConvUNet(
            input_channels=1, n_stages=stages, features_per_stage=[min(320, 32 * 2 ** i) for i in range(stages)],
            conv_op=nn.Conv3d, kernel_sizes=kernels, strides=strides, n_conv_per_stage=[2] * stages, num_classes=3,
            n_conv_per_stage_decoder=[2] * (stages - 1), conv_bias=True, norm_op=nn.InstanceNorm3d,
            norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
            deep_supervision=True)


class nnUNetTrainerPreemptible_Smoke(ShortRunMixin, nnUNetTrainerPreemptible):
    """2 short epochs of 15 iterations, no mirroring: long enough to stop one mid-epoch in the preemption tests."""

    short_epochs = 2
    short_iterations = 15

