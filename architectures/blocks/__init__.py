"""Dimension-generic building blocks shared by the networks of nnunet-ext.

Every block takes the convolution class (``nn.Conv2d`` or ``nn.Conv3d``) as its first argument, as
dynamic-network-architectures does, and works in 2D and 3D.
"""
from .aspp import ASPP
from .attention_gate import AttentionGate
from .depthwise import depthwise_conv
from .depthwise_separable import DepthwiseSeparableConv
from .ops import InstanceNorm, interpolation_mode, matching_norm, spatial_dims
from .scse import SCSE

__all__ = ["ASPP", "AttentionGate", "DepthwiseSeparableConv", "InstanceNorm", "SCSE", "depthwise_conv",
           "interpolation_mode", "matching_norm", "spatial_dims"]
