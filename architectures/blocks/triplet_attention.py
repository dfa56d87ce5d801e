"""Triplet (cross-dimensional) attention, Misra et al., WACV 2021, for any number of spatial axes."""
from __future__ import annotations

import torch
from torch import nn

from .ops import matching_norm, spatial_dims

# The original gates' BatchNorm: eps 1e-5, momentum 0.01 (PyTorch's default momentum is 0.1).
TRIPLET_NORM_KWARGS = {"eps": 1e-5, "momentum": 0.01, "affine": True}


class ZPoolGate(nn.Module):
    """One branch gate of triplet attention: Z-pool over dim 1 → k×…×k conv 2→1 (no bias) → BatchNorm → sigmoid.

    Z-pool stacks the maximum and the mean over dim 1 (in that order). The gate returns the attention weight, not
    the re-weighted input, so that the caller can apply all branches in one multiplication.

    Args:
        conv_op: ``nn.Conv2d`` or ``nn.Conv3d``; the convolution runs over the axes after dim 1.
        kernel_size: k, odd; "same" padding.
        norm_op_kwargs: keyword arguments of the BatchNorm.

    Shapes:
        input (B, P, *A) → weight (B, 1, *A) in (0, 1), where P is the pooled axis.
    """

    def __init__(self, conv_op: type[nn.Module], kernel_size: int = 7, norm_op_kwargs: dict | None = None) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.conv = conv_op(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = matching_norm(conv_op, "batch")(1, **(norm_op_kwargs or TRIPLET_NORM_KWARGS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch.max, not amax: its gradient goes to one maximum, as in the original (ReLU inputs tie often at 0)
        pooled = torch.cat((torch.max(x, dim=1, keepdim=True)[0], x.mean(dim=1, keepdim=True)), dim=1)
        return torch.sigmoid(self.norm(self.conv(pooled)))


class TripletAttention(nn.Module):
    """Cross-dimensional attention: the mean of one re-weighting per axis of the (channel, *spatial) tensor.

    Follows Misra, Nalamada, Arasanipalai & Hou, "Rotate to Attend: Convolutional Triplet Attention Module",
    WACV 2021. In 2D the input (B, C, H, W) gets three branches, each a ``ZPoolGate`` with its own weights:

        branch 0 pools over C and convolves the H×W plane (spatial attention);
        branch 1 swaps C and H (B, H, C, W), pools over H and convolves the C×W plane;
        branch 2 swaps C and W (B, W, H, C), pools over W and convolves the H×C plane;
        output = x · (w0 + w1 + w2) / 3, each w broadcast back to x's axes.

    The 3D form adds the branch for the third spatial axis (four branches, k×k×k convolutions). Branch a swaps
    dim 1 with dim a, as the original's permutations do, so weights carry over. x is re-weighted once by the mean
    weight instead of averaging three re-weighted copies: the same result, with no permuted copies of x.

    Args:
        conv_op: ``nn.Conv2d`` or ``nn.Conv3d``; selects 2D or 3D.
        kernel_size: kernel of the gate convolutions (7 in the paper).
        norm_op_kwargs: keyword arguments of the gates' BatchNorm (default: eps 1e-5, momentum 0.01, affine).

    Shapes:
        input (B, C, *spatial) → output of the same shape. Parameters: (spatial axes + 1) · (2·k^d + 2).
    """

    def __init__(self, conv_op: type[nn.Module], kernel_size: int = 7, norm_op_kwargs: dict | None = None) -> None:
        super().__init__()
        self.gates = nn.ModuleList(ZPoolGate(conv_op, kernel_size, norm_op_kwargs)
                                   for _ in range(spatial_dims(conv_op) + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None
        for axis, gate in enumerate(self.gates, start=1):
            # axis 1 (channels) is branch 0's pooled axis; axis a > 1 is swapped into dim 1 and back
            branch = gate(x).div(len(self.gates)) if axis == 1 else \
                gate(x.transpose(1, axis)).div(len(self.gates)).transpose(1, axis)
            weight = branch if weight is None else weight + branch
        return x * weight
