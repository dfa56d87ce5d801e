"""nnU-Net trainers for the SegFormer3D variant (PANTHER 2025 Task 1, pancreatic tumour in MRI, 4th place).

Recipe of the original (`training/config.py` of KyriakiKolpetinou/PancreasTumorSegmentation) where it differs from
nnU-Net's default: AdamW (lr 3e-4, weight decay 5e-5), linear warm-up then polynomial decay, gradient clipping
at 1.0, Dice + CE on the main head plus 0.3 x the same loss on the auxiliary head. nnU-Net's Dice + CE replaces
MONAI's DiceCELoss; the auxiliary loss is computed at the head's own stride-4 resolution against nnU-Net's
downsampled targets, where the original upsampled the logits instead. The original warms up for 9k of 250k
steps (3.6 %) and decays to zero at 150k; here the warm-up is the same fraction of nnU-Net's epochs and the
decay reaches zero at the last epoch, nnU-Net's convention.
"""
from __future__ import annotations

import torch

from nnunet_ext.architectures import SegFormer3DVariant
from nnunet_ext.trainers.base import DemoRunMixin, ShortRunMixin, nnUNetTrainerExt


class nnUNetTrainerSegFormer3DVariant(nnUNetTrainerExt):
    """SegFormer3DVariant with its original recipe (3D configurations only)."""

    network_class = SegFormer3DVariant
    supported_dims = (3,)
    grad_clip_norm = 1.0
    warmup_fraction = 9_000 / 250_000
    aux_loss_weight = 0.3
    initial_lr_override = 3e-4
    weight_decay_override = 5e-5

    @classmethod
    def build_optimizer(cls, parameters, initial_lr: float, weight_decay: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW(parameters, initial_lr, weight_decay=weight_decay)

    def build_lr_scheduler(self, optimizer: torch.optim.Optimizer):
        return self.warmup_poly_lr_scheduler(optimizer, self.warmup_fraction)

    def deep_supervision_weights(self, num_outputs: int) -> list[float]:
        return [1.0, self.aux_loss_weight]


class nnUNetTrainerSegFormer3DVariant_Smoke(ShortRunMixin, nnUNetTrainerSegFormer3DVariant):
    """1 epoch of 2 iterations, no mirroring: pipeline checks in seconds."""


class nnUNetTrainerSegFormer3DVariant_Demo(DemoRunMixin, nnUNetTrainerSegFormer3DVariant):
    """The step budget of ``nnunet-ext demo``."""
