"""Concurrent spatial and channel squeeze-and-excitation (scSE), Roy et al., MICCAI 2018."""
from __future__ import annotations

import torch
from torch import nn

from .ops import make_nonlin


class SCSE(nn.Module):
    """Concurrent spatial and channel squeeze-and-excitation: ``x·cSE(x) + x·sSE(x)``.

    Follows Roy, Navab & Wachinger, "Concurrent Spatial and Channel 'Squeeze & Excitation' in Fully Convolutional
    Networks", MICCAI 2018 (the additive combination), as used on the skips of the PANTHER SegFormer3D variant.

    * cSE: global average pool → 1×1 conv C→R (bias) → activation → 1×1 conv R→C (bias) → sigmoid, one weight
      per channel, with R = max(C // reduction, min_channels).
    * sSE: 1×1 conv C→1 (bias) → sigmoid, one weight per position.

    Args:
        conv_op: ``nn.Conv2d`` or ``nn.Conv3d``; selects 2D or 3D.
        channels: C, channels of input and output.
        reduction: channel reduction of the cSE bottleneck.
        min_channels: lower bound of the cSE bottleneck width.
        nonlin: activation class inside the cSE bottleneck (Roy et al. use ReLU; the PANTHER variant GELU).
        nonlin_kwargs: keyword arguments of ``nonlin``.

    Shapes:
        input (B, C, *spatial) → output (B, C, *spatial).
    """

    def __init__(self, conv_op: type[nn.Module], channels: int, reduction: int = 8, min_channels: int = 8,
                 nonlin: type[nn.Module] = nn.GELU, nonlin_kwargs: dict | None = None) -> None:
        super().__init__()
        bottleneck = max(channels // reduction, min_channels)
        self.channel_squeeze = conv_op(channels, bottleneck, 1)
        self.channel_nonlin = make_nonlin(nonlin, nonlin_kwargs)
        self.channel_excite = conv_op(bottleneck, channels, 1)
        self.spatial_squeeze = conv_op(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)
        channel_weight = torch.sigmoid(self.channel_excite(self.channel_nonlin(self.channel_squeeze(pooled))))
        spatial_weight = torch.sigmoid(self.spatial_squeeze(x))
        # x·wc + x·ws written as one product: two full-size passes instead of three
        return x * (channel_weight + spatial_weight)
