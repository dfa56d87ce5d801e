"""Dimension-generic building blocks shared by the networks of nnunet-ext.

Every block takes the convolution class (``nn.Conv2d`` or ``nn.Conv3d``) as its first argument, as
dynamic-network-architectures does, and works in 2D and 3D.
"""
from .aspp import ASPP
from .attention_gate import AttentionGate
from .cbam import ChannelGate, SpatialAttentionMap
from .deformable_conv import AttentiveDeformableConv, DeformableConv, deformable_sample, kernel_taps
from .depthwise import depthwise_conv
from .depthwise_separable import DepthwiseSeparableConv
from .ops import InstanceNorm, interpolation_mode, matching_norm, spatial_dims
from .scse import SCSE
from .triplet_attention import TripletAttention, ZPoolGate

__all__ = [
    "ASPP", "AttentionGate", "AttentiveDeformableConv", "ChannelGate", "DeformableConv", "DepthwiseSeparableConv",
    "InstanceNorm", "SCSE", "SpatialAttentionMap", "TripletAttention", "ZPoolGate", "deformable_sample",
    "depthwise_conv", "interpolation_mode", "kernel_taps", "matching_norm", "spatial_dims",
]
