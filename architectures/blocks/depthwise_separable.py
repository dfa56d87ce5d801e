"""Depthwise-separable convolution (MobileNet, Howard et al. 2017; Xception, Chollet 2017)."""
from __future__ import annotations

import torch
from torch import nn

from .depthwise import depthwise_conv
from .ops import make_nonlin, make_norm


class DepthwiseSeparableConv(nn.Module):
    """Depthwise k×k(×k) convolution → pointwise 1×1 convolution → optional norm → optional activation.

    Follows the depthwise-separable factorisation of MobileNet (Howard et al., 2017) and Xception (Chollet, 2017),
    with the dilated depthwise convolution used in DeepLabv3+ (Chen et al., 2018). Padding keeps the spatial size
    ("same") for stride 1 and gives ceil(size / stride) otherwise.

    Args:
        conv_op: ``nn.Conv2d`` or ``nn.Conv3d``; selects 2D or 3D.
        in_channels: channels of the input.
        out_channels: channels of the output.
        kernel_size: kernel size of the depthwise convolution (odd).
        stride: stride of the depthwise convolution.
        dilation: dilation of the depthwise convolution.
        bias: bias of the pointwise convolution. The depthwise convolution never has one, because the pointwise
            convolution would absorb it.
        norm_op: normalisation class applied after the pointwise convolution (e.g. ``nn.InstanceNorm3d``) or None.
        norm_op_kwargs: keyword arguments of ``norm_op``.
        nonlin: activation class applied last (e.g. ``nn.GELU``) or None.
        nonlin_kwargs: keyword arguments of ``nonlin``.

    Shapes:
        input (B, in_channels, *spatial) → output (B, out_channels, *ceil(spatial / stride)).
    """

    def __init__(self, conv_op: type[nn.Module], in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, dilation: int = 1, bias: bool = False,
                 norm_op: type[nn.Module] | None = None, norm_op_kwargs: dict | None = None,
                 nonlin: type[nn.Module] | None = None, nonlin_kwargs: dict | None = None) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep the size, got {kernel_size}")
        self.depthwise = conv_op(in_channels, in_channels, kernel_size, stride=stride,
                                 padding=dilation * (kernel_size - 1) // 2, dilation=dilation,
                                 groups=in_channels, bias=False)
        self.pointwise = conv_op(in_channels, out_channels, 1, bias=bias)
        self.norm = make_norm(norm_op, out_channels, norm_op_kwargs)
        self.nonlin = make_nonlin(nonlin, nonlin_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin(self.norm(self.pointwise(depthwise_conv(self.depthwise, x))))
