"""nnU-Net trainers for REC-UNet (liver and liver-tumour segmentation in CT; github.com/459806555/REC-UNet).

The original trains liver and tumour as two independent sigmoid channels (liver = labels 1 ∪ 2, tumour = label 2)
with BCE + soft Dice. In nnU-Net that is region-based training: declare the regions in dataset.json
(``"labels": {"background": 0, "liver": [1, 2], "tumour": 2}``, ``"regions_class_order": [1, 2]``) and nnU-Net
gives the network one sigmoid output per region and trains it with its ``DC_and_BCE_loss`` (BCE + soft Dice with
equal weights, as the original's LiTS loss). Without regions the trainer still works, with softmax Dice + CE.

Recipe of the original (``LiTS_train.py`` and its README) where it differs from nnU-Net's default:
  * Adam, lr 3e-4, no weight decay (nnU-Net: SGD with Nesterov momentum, lr 1e-2, poly decay);
  * the README's two runs (100 epochs at 3e-4, then the last checkpoint reloaded for 20 epochs at 1e-4) as one
    schedule: lr 3e-4 for the first 100/120 of nnU-Net's epochs, 1e-4 for the rest;
  * no deep supervision (the network has a single head).
Kept from nnU-Net, unlike the original: its patch sampling, augmentation, batch size and epoch length, gradient
clipping at 12, 5-fold cross-validation over patients (the original splits slices at random, so one patient's
slices land in training and validation), no early stopping (the original stops after 50 epochs without
validation-loss improvement), and 2D inputs of the planned channels (the original reads the middle slice of a
3-slice stack). The 3D form of the network is not offered here: the original is 2D, and at its widths the 3D
form has 104 M parameters.
"""
from __future__ import annotations

import torch

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_ext.architectures import RECUNet
from nnunet_ext.architectures.recunet import ORIGINAL_FEATURES
from nnunet_ext.trainers.base import DemoRunMixin, ShortRunMixin, nnUNetTrainerExt
from nnunet_ext.trainers.lr_schedules import TwoPhaseLRScheduler


class nnUNetTrainerRECUNet(nnUNetTrainerExt):
    """REC-UNet (2D configurations only) with the original's Adam recipe and no deep supervision."""

    network_class = RECUNet
    supported_dims = (2,)
    deep_supervision = False
    final_lr = 1e-4
    # README: 100 epochs at 3e-4, then 20 at 1e-4
    final_phase_fraction = 20 / 120
    initial_lr_override = 3e-4
    weight_decay_override = 0.0

    @classmethod
    def build_optimizer(cls, parameters, initial_lr: float, weight_decay: float) -> torch.optim.Optimizer:
        return torch.optim.Adam(parameters, initial_lr, weight_decay=weight_decay)

    def build_lr_scheduler(self, optimizer: torch.optim.Optimizer) -> TwoPhaseLRScheduler:
        switch_epoch = round(self.num_epochs * (1 - self.final_phase_fraction))
        return TwoPhaseLRScheduler(optimizer, self.initial_lr, self.final_lr, switch_epoch)

    def on_train_start(self) -> None:
        super().on_train_start()
        if not self.label_manager.has_regions:
            self.print_to_log_file(
                "Note: the dataset has no regions, so REC-UNet trains softmax outputs with Dice + CE. The original "
                "trains overlapping sigmoid channels (liver = {liver, tumour}, tumour); declare them as regions in "
                "dataset.json to train that way (see the README).")


class nnUNetTrainerRECUNet_Smoke(ShortRunMixin, nnUNetTrainerRECUNet):
    """1 epoch of 2 iterations, no mirroring, and a quarter of the original widths (16 ... 256 features, 2.18 M
    parameters): pipeline checks in seconds. At the original widths each checkpoint holds 419 MB (weights and Adam
    state), too much disk traffic for a test suite; the full-width network is tested on its own."""

    features_per_stage = tuple(f // 4 for f in ORIGINAL_FEATURES)

    @classmethod
    def network_kwargs(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager) -> dict:
        return {**super().network_kwargs(plans_manager, configuration_manager),
                "features_per_stage": cls.features_per_stage}


class nnUNetTrainerRECUNet_Demo(DemoRunMixin, nnUNetTrainerRECUNet):
    """The step budget of ``nnunet-ext demo``."""
