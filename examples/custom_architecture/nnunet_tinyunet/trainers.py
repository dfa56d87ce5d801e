"""nnU-Net trainers for TinyUNet. The entry point in ``pyproject.toml`` names this module, so after
``pip install`` the stock commands find the classes listed in ``__all__``:

    nnUNetv2_train DATASET 3d_fullres 0 -tr nnUNetTrainerTinyUNet

``nnUNetTrainerExt`` brings everything common (dimension check, deep-supervision scales from the network,
CPU/CUDA/MPS handling, the network's size in the training log); a trainer names its network and overrides only
the recipe hooks that differ from nnU-Net's default.
"""
from __future__ import annotations

from torch import nn

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_ext.trainers import ShortRunMixin, nnUNetTrainerExt
from nnunet_tinyunet.network import TinyUNet

__all__ = ["nnUNetTrainerTinyUNet", "nnUNetTrainerTinyUNet_Smoke"]


class nnUNetTrainerTinyUNet(nnUNetTrainerExt):
    """TinyUNet in nnU-Net's default recipe, with every deep-supervision head in the loss."""

    network_class = TinyUNet
    supported_dims = (2, 3)

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        # static: nnU-Net calls it at prediction time too, so everything comes from the arguments
        conv_op = nn.Conv2d if len(configuration_manager.patch_size) == 2 else nn.Conv3d
        return TinyUNet(num_input_channels, num_output_channels, deep_supervision=enable_deep_supervision,
                        conv_op=conv_op)

    def deep_supervision_weights(self, num_outputs: int) -> list[float]:
        # nnU-Net's default gives the coarsest output weight 0; with only two outputs that would mute a head
        return [0.5 ** k for k in range(num_outputs)]


class nnUNetTrainerTinyUNet_Smoke(ShortRunMixin, nnUNetTrainerTinyUNet):
    """1 epoch of 2 iterations, no mirroring: checks the pipeline in seconds."""
