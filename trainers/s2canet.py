"""nnU-Net trainers for S2CA-Net (Shape-Scale Co-Awareness Network, 3D brain tumour segmentation).

Recipe of the original (`train.py`, `configs/adam.cfg` of jiangyu945/S2CA-Net) where it differs from nnU-Net's
default: Adam (lr 1e-3, weight decay 1e-5) with a linear warm-up from lr/1000 (5 of 400 epochs), a constant lr
(50 epochs) and a cosine decay to lr/1000 at the end; the same fractions of nnU-Net's epochs here. The original's
sigmoid multi-label output over overlapping BraTS regions is nnU-Net's region-based training (Dice + BCE, the
background channel of the original is left out), and its 8-flip test-time augmentation is nnU-Net's mirroring.

Deep supervision, mapped onto nnU-Net's: the original weights the losses of its four heads 0.2 / 0.3 / 0.6 / 0.8
from coarse (1/8) to fine (full resolution) and sums them, unnormalised, after upsampling every head's logits to
the input size. Here the heads keep their native resolutions (1, 1/2, 1/4, 1/8, ``deep_supervision_scales``) and
nnU-Net compares them with its downsampled targets, with the same weights 0.8 / 0.6 / 0.3 / 0.2 from fine to coarse
(``deep_supervision_weights``; unnormalised, as the original). Why: nnU-Net already builds the downsampled
targets in its data loader (regions and ignore label included), and upsampling three extra heads to 128³ would
cost three full-resolution logit maps and their losses in every step for a supervision signal of the same
coarseness. All four weights are positive, so every head gets a gradient (DDP needs it).
"""
from __future__ import annotations

import torch
from torch import nn

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_ext.architectures import S2CANet
from nnunet_ext.trainers.base import DemoRunMixin, ShortRunMixin, nnUNetTrainerExt
from nnunet_ext.trainers.lr_schedules import WarmupConstantCosineLRScheduler


class nnUNetTrainerS2CANet(nnUNetTrainerExt):
    """S2CANet with its original recipe (3D configurations only), built for the plan's patch size.

    The patch is rounded to the nearest multiple of 8 per axis (S2CA-Net's total stride; the tri-planar layers are
    built for exactly that patch, which is also nnU-Net's sliding-window tile); a planned patch below 16 per axis
    is refused with the minimum named.
    """

    network_class = S2CANet
    supported_dims = (3,)
    # the original: 5 warm-up and 50 constant epochs of 400
    warmup_fraction = 5 / 400
    constant_fraction = 50 / 400
    deep_supervision_loss_weights = (0.8, 0.6, 0.3, 0.2)
    initial_lr_override = 1e-3
    weight_decay_override = 1e-5

    @classmethod
    def adjust_patch_size(cls, patch_size: list[int]) -> list[int]:
        return S2CANet.nearest_patch_size(patch_size)

    @classmethod
    def reference_network(cls) -> nn.Module:
        return S2CANet(1, 3, deep_supervision=True)

    @classmethod
    def network_kwargs(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager) -> dict:
        # the tri-planar layers are built for the plan's patch, which is also the sliding-window tile
        return {**super().network_kwargs(plans_manager, configuration_manager),
                "patch_size": configuration_manager.patch_size}

    @classmethod
    def build_optimizer(cls, parameters, initial_lr: float, weight_decay: float) -> torch.optim.Optimizer:
        return torch.optim.Adam(parameters, initial_lr, weight_decay=weight_decay)

    def build_lr_scheduler(self, optimizer: torch.optim.Optimizer) -> WarmupConstantCosineLRScheduler:
        warmup = round(self.num_epochs * self.warmup_fraction)
        constant = round(self.num_epochs * self.constant_fraction)
        return WarmupConstantCosineLRScheduler(optimizer, self.initial_lr, warmup, constant, self.num_epochs)

    def deep_supervision_weights(self, num_outputs: int) -> list[float]:
        return list(self.deep_supervision_loss_weights[:num_outputs])


class nnUNetTrainerS2CANet_Smoke(ShortRunMixin, nnUNetTrainerS2CANet):
    """1 epoch of 2 iterations, no mirroring: pipeline checks in seconds."""


class nnUNetTrainerS2CANet_Demo(DemoRunMixin, nnUNetTrainerS2CANet):
    """The step budget of ``nnunet-ext demo``."""
