"""Channel and spatial attention of CBAM (Woo et al., ECCV 2018), for any number of spatial axes."""
from __future__ import annotations

import torch
from torch import nn


class SpatialAttentionMap(nn.Module):
    """Spatial attention weight: sigmoid of a convolution over the channel-wise maximum and mean.

    Follows the spatial attention of CBAM (Woo, Park, Lee & Kweon, "CBAM: Convolutional Block Attention Module",
    ECCV 2018): w = sigmoid(conv_k([max_c(x), mean_c(x)])), a k×k(×k) convolution 2→1 without bias. Returns the
    weight, not the re-weighted input (S2CA-Net's attentive deformable convolution scales its offsets by it).

    Args:
        conv_op: ``nn.Conv2d`` or ``nn.Conv3d``; selects 2D or 3D.
        kernel_size: k, odd ("same" padding).
        mean_first: stack the mean before the maximum (the order of the convolution's two input channels;
            RccSegmentor's L-SAM uses mean first, S2CA-Net max first).

    Shapes:
        input (B, C, *spatial) → weight (B, 1, *spatial) in (0, 1).
    """

    def __init__(self, conv_op: type[nn.Module], kernel_size: int = 7, mean_first: bool = False) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.mean_first = mean_first
        self.conv = conv_op(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch.max, not amax: its gradient goes to one maximum, as in the originals
        pooled = (torch.max(x, dim=1, keepdim=True)[0], x.mean(dim=1, keepdim=True))
        if self.mean_first:
            pooled = pooled[::-1]
        return torch.sigmoid(self.conv(torch.cat(pooled, dim=1)))


class ChannelGate(nn.Module):
    """CBAM channel attention: one weight per channel from pooled descriptors through a shared MLP, applied.

    Follows CBAM (Woo et al., ECCV 2018):

        w = sigmoid(Σ_pool MLP(pool(x))),  MLP = Linear C→R → ReLU → Linear R→C,  R = max(1, C // reduction)
        out = x · w

    Configurations used in this package: S2CA-Net's MetaFormer mixer (average and max pooling, no biases) and its
    squeeze-and-excitation gates (average pooling only, no biases: SE of Hu et al., CVPR 2018), RccSegmentor's L-CAM (average and max pooling, no biases; it writes the MLP as 1×1 convolutions,
    the same function).

    Args:
        channels: C.
        reduction: channel reduction of the MLP bottleneck.
        pools: global poolings whose descriptors are summed after the MLP, from "avg" and "max".
        bias: biases of the two linear layers.

    Shapes:
        input (B, C, *spatial) with any number of spatial axes → output of the same shape.
    """

    def __init__(self, channels: int, reduction: int = 16, pools: tuple[str, ...] = ("avg", "max"),
                 bias: bool = True) -> None:
        super().__init__()
        unknown = set(pools) - {"avg", "max"}
        if unknown or not pools:
            raise ValueError(f"pools must be a non-empty selection of 'avg' and 'max', got {pools}")
        self.pools = tuple(pools)
        bottleneck = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Linear(channels, bottleneck, bias=bias), nn.ReLU(),
                                 nn.Linear(bottleneck, channels, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        descriptors = [flat.mean(dim=2) if pool == "avg" else flat.amax(dim=2) for pool in self.pools]
        # all descriptors through the shared MLP as one batch
        logits = self.mlp(torch.cat(descriptors)).view(len(self.pools), *x.shape[:2]).sum(0)
        return x * torch.sigmoid(logits).view(*x.shape[:2], *([1] * (x.ndim - 2)))
