"""nnU-Net trainers for RccSegmentor (clear-cell renal cell carcinoma in CT, 2D; Zhang et al., 2025).

The original publishes the model only: no loss, optimizer, schedule, augmentation or inference code, and the
paper's recipe is not public. These trainers therefore keep nnU-Net's default recipe in full (SGD, lr 1e-2,
Nesterov momentum 0.99, weight decay 3e-5, polynomial decay over 1000 epochs of 250 iterations, Dice + CE,
nnU-Net's augmentation and sliding-window inference) and change only:
  * the network (``RccSegmentor`` / ``RccSegmentorLight``; the ``2d`` configuration only);
  * the patch size, rounded up to multiples of 32 so that the network never pads in training;
  * the deep-supervision weights: the three outputs (full size, 1/8, 1/16) get nnU-Net's halving weights
    4/7, 2/7, 1/7 without switching the coarsest off, so that its head always has a gradient (DDP);
  * optionally, ImageNet weights for the PVTv2 encoder from a local file, named by the class attribute
    ``pretrained_weights`` or the environment variable ``NNUNET_EXT_PVT_V2_WEIGHTS`` (the attribute wins).
    They are loaded when a training starts from scratch; ``--c``, ``--val`` and prediction never read them.
    Nothing is downloaded; without either, the encoder starts random, the original's default.
"""
from __future__ import annotations

import os

from torch import nn

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_ext.architectures import RccSegmentor, RccSegmentorLight
from nnunet_ext.trainers.base import DemoRunMixin, ShortRunMixin, nnUNetTrainerExt

PRETRAINED_WEIGHTS_VARIABLE = "NNUNET_EXT_PVT_V2_WEIGHTS"


class nnUNetTrainerRccSegmentor(nnUNetTrainerExt):
    """RccSegmentor as published (PVTv2-b2 encoder, full-convolution FEM) with nnU-Net's default recipe (2D only).

    Class constants:
        backbone: the timm PVTv2 variant of the encoder.
        pretrained_weights: path of a local ImageNet checkpoint of ``backbone`` for the encoder, or None to read
            ``NNUNET_EXT_PVT_V2_WEIGHTS`` (unset: random initialisation).
    """

    network_class = RccSegmentor
    supported_dims = (2,)
    backbone: str = "pvt_v2_b2"
    pretrained_weights: str | None = None
    _restoring_checkpoint = False

    @classmethod
    def reference_network(cls) -> nn.Module:
        return cls.network_class(1, 3, deep_supervision=True, backbone=cls.backbone)

    @classmethod
    def network_kwargs(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager) -> dict:
        # from the class, so that variants change the backbone
        return {**super().network_kwargs(plans_manager, configuration_manager), "backbone": cls.backbone}

    def deep_supervision_weights(self, num_outputs: int) -> list[float]:
        weights = [0.5 ** i for i in range(num_outputs)]
        return [w / sum(weights) for w in weights]

    @classmethod
    def pretrained_weights_path(cls) -> str | None:
        """The encoder checkpoint to start from: ``pretrained_weights``, else ``$NNUNET_EXT_PVT_V2_WEIGHTS``."""
        return cls.pretrained_weights or os.environ.get(PRETRAINED_WEIGHTS_VARIABLE) or None

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        # the checkpoint's weights replace any ImageNet start (--c, --val): that file is neither read nor needed
        self._restoring_checkpoint = True
        super().load_checkpoint(filename_or_checkpoint)

    def initialize(self) -> None:
        first_time = not self.was_initialized
        super().initialize()
        path = self.pretrained_weights_path()
        if first_time and path and not self._restoring_checkpoint:
            source = (f"{type(self).__name__}.pretrained_weights" if self.pretrained_weights else
                      f"the environment variable {PRETRAINED_WEIGHTS_VARIABLE}")
            try:
                loaded = self._unwrapped_network().load_pretrained_encoder(path)
            except (FileNotFoundError, ValueError) as error:
                raise type(error)(f"{error} (path from {source})") from error
            self.print_to_log_file(f"Encoder {self.backbone}: {loaded} tensors of ImageNet weights from {path}")


class nnUNetTrainerRccSegmentorLight(nnUNetTrainerRccSegmentor):
    """RccSegmentorLight (depthwise FEM convolutions, 25.8 M parameters) with nnU-Net's default recipe (2D only)."""

    network_class = RccSegmentorLight


class nnUNetTrainerRccSegmentor_Smoke(ShortRunMixin, nnUNetTrainerRccSegmentor):
    """1 epoch of 2 iterations, no mirroring, and the smallest encoder (``pvt_v2_b0``) to keep tests fast: the
    published FEM and decoder on a smaller backbone."""

    backbone = "pvt_v2_b0"


class nnUNetTrainerRccSegmentorLight_Smoke(ShortRunMixin, nnUNetTrainerRccSegmentorLight):
    """1 epoch of 2 iterations, no mirroring, ``pvt_v2_b0`` encoder (tests)."""

    backbone = "pvt_v2_b0"


class nnUNetTrainerRccSegmentor_Demo(DemoRunMixin, nnUNetTrainerRccSegmentor):
    """The step budget of ``nnunet-ext demo`` (full network)."""


class nnUNetTrainerRccSegmentorLight_Demo(DemoRunMixin, nnUNetTrainerRccSegmentorLight):
    """The step budget of ``nnunet-ext demo`` (full light network)."""
