"""Pure-PyTorch networks of nnunet-ext and their shared blocks (imports torch only; never nnunetv2)."""
from . import blocks
from .segformer3d_variant import SegFormer3DVariant

__all__ = ["SegFormer3DVariant", "blocks"]
