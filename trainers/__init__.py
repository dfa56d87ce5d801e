"""nnU-Net trainers of nnunet-ext. nnU-Net finds them by class name through ``nnunet_ext.discovery``.

``TRAINERS`` lists the full-length trainers, one per architecture; each module also holds short variants
(``_Smoke`` for tests, ``_Demo`` for ``nnunet-ext demo``).
"""
from nnunet_ext.trainers.base import DemoRunMixin, ShortRunMixin, nnUNetTrainerExt
from nnunet_ext.trainers.baseline import (
    nnUNetTrainer_Demo,
    nnUNetTrainer_Smoke,
    nnUNetTrainerPreemptible,
    nnUNetTrainerPreemptible_Smoke,
)
from nnunet_ext.trainers.preemption import PreemptionSafeMixin
from nnunet_ext.trainers.rccsegmentor import (
    nnUNetTrainerRccSegmentor,
    nnUNetTrainerRccSegmentor_Demo,
    nnUNetTrainerRccSegmentor_Smoke,
    nnUNetTrainerRccSegmentorLight,
    nnUNetTrainerRccSegmentorLight_Demo,
    nnUNetTrainerRccSegmentorLight_Smoke,
)
from nnunet_ext.trainers.recunet import nnUNetTrainerRECUNet, nnUNetTrainerRECUNet_Demo, nnUNetTrainerRECUNet_Smoke
from nnunet_ext.trainers.s2canet import nnUNetTrainerS2CANet, nnUNetTrainerS2CANet_Demo, nnUNetTrainerS2CANet_Smoke
from nnunet_ext.trainers.segformer3d_variant import (
    nnUNetTrainerSegFormer3DVariant,
    nnUNetTrainerSegFormer3DVariant_Demo,
    nnUNetTrainerSegFormer3DVariant_Smoke,
)

TRAINERS: tuple[type[nnUNetTrainerExt], ...] = (nnUNetTrainerSegFormer3DVariant, nnUNetTrainerRECUNet,
                                              nnUNetTrainerRccSegmentor, nnUNetTrainerRccSegmentorLight,
                                              nnUNetTrainerS2CANet)
# nnU-Net's default network with this package's preemption safety; listed, but no architecture of ours
BASELINES: tuple[type, ...] = (nnUNetTrainerPreemptible,)

__all__ = [
    "TRAINERS",
    "BASELINES",
    "DemoRunMixin",
    "PreemptionSafeMixin",
    "ShortRunMixin",
    "nnUNetTrainerExt",
    "nnUNetTrainer_Demo",
    "nnUNetTrainer_Smoke",
    "nnUNetTrainerPreemptible",
    "nnUNetTrainerPreemptible_Smoke",
    "nnUNetTrainerRECUNet",
    "nnUNetTrainerRECUNet_Demo",
    "nnUNetTrainerRECUNet_Smoke",
    "nnUNetTrainerRccSegmentor",
    "nnUNetTrainerRccSegmentor_Demo",
    "nnUNetTrainerRccSegmentor_Smoke",
    "nnUNetTrainerRccSegmentorLight",
    "nnUNetTrainerRccSegmentorLight_Demo",
    "nnUNetTrainerRccSegmentorLight_Smoke",
    "nnUNetTrainerS2CANet",
    "nnUNetTrainerS2CANet_Demo",
    "nnUNetTrainerS2CANet_Smoke",
    "nnUNetTrainerSegFormer3DVariant",
    "nnUNetTrainerSegFormer3DVariant_Demo",
    "nnUNetTrainerSegFormer3DVariant_Smoke",
]
