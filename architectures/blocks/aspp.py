"""Atrous spatial pyramid pooling (DeepLabv3, Chen et al., 2017) with depthwise-separable atrous branches."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .depthwise_separable import DepthwiseSeparableConv
from .ops import make_nonlin, make_norm


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling with depthwise-separable atrous branches.

    Follows Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation" (DeepLabv3, 2017), with
    the depthwise-separable atrous convolutions of DeepLabv3+ (Chen et al., ECCV 2018), in the form used by the
    PANTHER SegFormer3D variant. Parallel branches, concatenated, then projected:

    * 1×1 conv C_in→C_out (no bias) → norm → activation;
    * per rate r: depthwise-separable conv C_in→C_in (3×3(×3) depthwise, dilation r) → norm → activation, then
      1×1 conv C_in→C_out (no bias) → norm → activation;
    * image pooling: global average pool → 1×1 conv C_in→C_out (no bias) → activation, broadcast back (no norm:
      a single position per sample cannot be instance-normalised);
    * projection: 1×1 conv (2 + len(rates))·C_out → C_out (no bias), no norm or activation.

    Args:
        conv_op: ``nn.Conv2d`` or ``nn.Conv3d``; selects 2D or 3D.
        in_channels: C_in.
        out_channels: C_out.
        rates: dilation rates of the atrous branches.
        norm_op: normalisation class of the branches (e.g. ``nn.InstanceNorm3d``) or None.
        norm_op_kwargs: keyword arguments of ``norm_op``.
        nonlin: activation class of the branches.
        nonlin_kwargs: keyword arguments of ``nonlin``.

    Shapes:
        input (B, C_in, *spatial) → output (B, C_out, *spatial).
    """

    def __init__(self, conv_op: type[nn.Module], in_channels: int, out_channels: int,
                 rates: Sequence[int] = (1, 2, 3),
                 norm_op: type[nn.Module] | None = None, norm_op_kwargs: dict | None = None,
                 nonlin: type[nn.Module] = nn.GELU, nonlin_kwargs: dict | None = None) -> None:
        super().__init__()

        def conv_norm_act(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(conv_op(cin, cout, 1, bias=False), make_norm(norm_op, cout, norm_op_kwargs),
                                 make_nonlin(nonlin, nonlin_kwargs))

        self.pointwise_branch = conv_norm_act(in_channels, out_channels)
        self.atrous_branches = nn.ModuleList(
            nn.Sequential(
                DepthwiseSeparableConv(conv_op, in_channels, in_channels, 3, dilation=rate, norm_op=norm_op,
                                       norm_op_kwargs=norm_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs),
                conv_norm_act(in_channels, out_channels),
            )
            for rate in rates
        )
        self.pooling_branch = nn.Sequential(conv_op(in_channels, out_channels, 1, bias=False),
                                            make_nonlin(nonlin, nonlin_kwargs))
        self.projection = conv_op((2 + len(rates)) * out_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pooling_branch(x.mean(dim=tuple(range(2, x.ndim)), keepdim=True))
        branches = [self.pointwise_branch(x), *(branch(x) for branch in self.atrous_branches),
                    pooled.expand(-1, -1, *x.shape[2:])]  # resizing one position to any size is a broadcast
        return self.projection(torch.cat(branches, dim=1))
