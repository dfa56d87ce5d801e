"""nnU-Net trainers of nnunet-ext. nnU-Net finds them by class name through ``nnunet_ext.discovery``.

``TRAINERS`` lists the full-length trainers, one per architecture; each module also holds short variants
(``_Smoke`` for tests, ``_Demo`` for ``nnunet-ext demo``).
"""
from nnunet_ext.trainers.base import DemoRunMixin, ShortRunMixin, nnUNetTrainerExt
from nnunet_ext.trainers.baseline import nnUNetTrainer_Demo, nnUNetTrainer_Smoke
from nnunet_ext.trainers.segformer3d_variant import (
    nnUNetTrainerSegFormer3DVariant,
    nnUNetTrainerSegFormer3DVariant_Demo,
    nnUNetTrainerSegFormer3DVariant_Smoke,
)

TRAINERS: tuple[type[nnUNetTrainerExt], ...] = (nnUNetTrainerSegFormer3DVariant,)

__all__ = [
    "TRAINERS",
    "DemoRunMixin",
    "ShortRunMixin",
    "nnUNetTrainerExt",
    "nnUNetTrainer_Demo",
    "nnUNetTrainer_Smoke",
    "nnUNetTrainerSegFormer3DVariant",
    "nnUNetTrainerSegFormer3DVariant_Demo",
    "nnUNetTrainerSegFormer3DVariant_Smoke",
]
