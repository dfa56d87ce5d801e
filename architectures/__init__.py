"""Pure-PyTorch networks of nnunet-ext and their shared blocks (imports torch only; never nnunetv2)."""
from . import blocks
from .rccsegmentor import RccSegmentor, RccSegmentorLight
from .recunet import RECUNet
from .s2canet import S2CANet
from .segformer3d_variant import SegFormer3DVariant

__all__ = ["RECUNet", "RccSegmentor", "RccSegmentorLight", "S2CANet", "SegFormer3DVariant", "blocks"]
