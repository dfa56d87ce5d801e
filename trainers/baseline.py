"""Short runs of nnU-Net's default trainer (PlainConvUNet), the baseline that ``nnunet-ext demo`` compares with."""
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_ext.trainers.base import DemoRunMixin, ShortRunMixin


class nnUNetTrainer_Smoke(ShortRunMixin, nnUNetTrainer):
    """nnU-Net's default network and recipe, 1 epoch of 2 iterations, no mirroring."""


class nnUNetTrainer_Demo(DemoRunMixin, nnUNetTrainer):
    """nnU-Net's default network and recipe with the demo's step budget."""
