"""Deformable convolution in plain PyTorch (2D and 3D), and the attentive variant of S2CA-Net's MS-ADC.

Papers:
    Dai et al., "Deformable Convolutional Networks", ICCV 2017 -- learned per-tap sampling offsets.
    Zhu et al., "Deformable ConvNets v2", CVPR 2019 -- modulated sampling.
    Zhou, Jiang, Li, Hu & Zheng, "Shape-Scale Co-Awareness Network for 3D Brain Tumor Segmentation" (S2CA-Net,
        submitted to IEEE TMI; github.com/jiangyu945/S2CA-Net, modules/DeformableBlock3D.py) -- offsets scaled by a
        spatial attention map of themselves, sampled volume projected by a 1×1×1 convolution.

How it is computed: every kernel tap's sampling positions (output voxel + tap + learned offset) go into one grid,
with the taps folded into the first spatial axis of the grid, and a single ``F.grid_sample`` call (bilinear /
trilinear, zero outside the input; optionally the original S2CA-Net's border rule, by moving outside positions to
their floor first) samples all taps at once. The samples, ordered (channel, tap), are then
projected with one 1×1(×1) convolution over channels × taps, which is the convolution's weight. No Python loop over
taps or positions and no per-neighbour index tensors: the extra memory is the grid and the (C·K)-channel samples.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from .cbam import SpatialAttentionMap
from .ops import spatial_dims

BORDER_RULES = ("zeros", "floor")


def kernel_taps(kernel_size: int, dims: int, dilation: int = 1) -> torch.Tensor:
    """Integer displacements of the taps of a centred kernel, shape (K, dims) with K = kernel_size^dims.

    Taps are ordered like the elements of a convolution weight (last axis fastest), so tap n of a 3D kernel is
    weight[..., n // k², (n // k) % k, n % k].
    """
    half = (kernel_size - 1) // 2
    steps = [dilation * (i - half) for i in range(kernel_size)]
    return torch.tensor(list(itertools.product(steps, repeat=dims)), dtype=torch.float32)


def deformable_sample(x: torch.Tensor, offsets: torch.Tensor, kernel_size: int, dilation: int = 1,
                      border: str = "zeros") -> torch.Tensor:
    """Sample ``x`` at every position + kernel tap + offset, multi-linearly (``border`` sets the rule at the border).

    Args:
        x: (B, C, *S) input, S of 2 or 3 spatial axes.
        offsets: (B, dims·K, *S) displacements in voxels, axis-major: channel a·K + n is the displacement along
            spatial axis a (0 = first spatial axis) of tap n (order of ``kernel_taps``).
        kernel_size: k, the kernel is k^dims taps (odd k: centred).
        dilation: spacing of the taps.
        border: "zeros": multi-linear everywhere, zero outside the input (``grid_sample``'s zero padding);
            "floor": the rule of the original S2CA-Net code (its gather of 8 neighbours in a 1-voxel zero-padded
            volume with snapped and clamped positions), which per axis of size S moves a position outside
            [0, S-1] to its floor: a position in (S-1, S) reads the last voxel, one in [-1, 0) or beyond reads
            zero; inside [0, S-1] both rules interpolate alike.

    Returns:
        (B, C·K, *S) samples ordered (channel, tap), channel-major: channel c·K + n is channel c at tap n.
    """
    if border not in BORDER_RULES:
        raise ValueError(f"border must be one of {BORDER_RULES}, got {border!r}")
    batch, channels, *size = x.shape
    dims = len(size)
    taps = kernel_taps(kernel_size, dims, dilation).to(device=x.device, dtype=offsets.dtype)
    num_taps = taps.shape[0]
    if offsets.shape != (batch, dims * num_taps, *size):
        raise ValueError(f"offsets must have shape {(batch, dims * num_taps, *size)}, got {tuple(offsets.shape)}")
    offsets = offsets.view(batch, dims, num_taps, *size)
    # grid_sample wants normalised coordinates (align_corners=False): g = (2p + 1) / size - 1, last axis first
    components = []
    for axis in reversed(range(dims)):
        shape = [1] * (1 + dims)
        shape[1 + axis] = size[axis]
        index = torch.arange(size[axis], device=x.device, dtype=offsets.dtype).view(shape)
        anchor = taps[:, axis].view(num_taps, *[1] * dims) + index
        scale, shift = 2.0 / size[axis], 1.0 / size[axis] - 1.0
        if border == "zeros":
            components.append(offsets[:, axis] * scale + (anchor * scale + shift))
        else:
            position = offsets[:, axis] + anchor
            inside = (position >= 0) & (position <= size[axis] - 1)
            # the floor of an outside position is an integer: grid_sample reads that voxel, or zero beyond
            components.append(torch.where(inside, position, position.floor()) * scale + shift)
    grid = torch.stack(components, dim=-1).view(batch, num_taps * size[0], *size[1:], dims)
    samples = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return samples.view(batch, channels * num_taps, *size)


class DeformableConv(nn.Module):
    """Deformable convolution (stride 1, same size) with externally given offsets.

    Equals the ordinary convolution with weight ``weight_as_conv()`` when all offsets are zero.

    Args:
        conv_op: ``nn.Conv2d`` or ``nn.Conv3d``; selects 2D or 3D.
        in_channels: C_in.
        out_channels: C_out.
        kernel_size: odd k; k^dims taps.
        dilation: spacing of the taps.
        bias: bias of the projection.
        border: sampling rule at the border, "zeros" or "floor" (see ``deformable_sample``).

    Shapes:
        x (B, C_in, *S), offsets (B, dims·k^dims, *S) (layout of ``deformable_sample``) → (B, C_out, *S).
    """

    def __init__(self, conv_op: type[nn.Module], in_channels: int, out_channels: int, kernel_size: int = 3,
                 dilation: int = 1, bias: bool = False, border: str = "zeros") -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        if border not in BORDER_RULES:
            raise ValueError(f"border must be one of {BORDER_RULES}, got {border!r}")
        self.border = border
        self.dims = spatial_dims(conv_op)
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.num_taps = kernel_size ** self.dims
        # the original's 1×1 projection over (channel, tap) samples: one weight per (out, in, tap)
        self.projection = conv_op(in_channels * self.num_taps, out_channels, 1, bias=bias)

    @property
    def offset_channels(self) -> int:
        return self.dims * self.num_taps

    def weight_as_conv(self) -> torch.Tensor:
        """The projection's weight as an ordinary (C_out, C_in, k, ..., k) convolution weight."""
        out_channels = self.projection.out_channels
        return self.projection.weight.view(out_channels, -1, *[self.kernel_size] * self.dims)

    def forward(self, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.projection(deformable_sample(x, offsets, self.kernel_size, self.dilation, self.border))


class AttentiveDeformableConv(nn.Module):
    """Attentive deformable convolution of S2CA-Net's MS-ADC (``AttDeformConv3d`` there).

    z = 1×1 conv C_in → C_in / reduction (no bias), the sampled channels;
    offsets = k×k conv z → dims·K (no bias), multiplied by a spatial attention map of the offsets
    (channel max and mean → conv (attention_kernel, no bias) → sigmoid);
    out = DeformableConv(z, offsets) → C_out (no bias, no norm, no residual).

    Border handling: by default values outside the input are zero and interpolation is multi-linear everywhere;
    the original snaps positions outside the input to their floor (``border="floor"`` reproduces it, see
    ``deformable_sample``). The two differ only for samples within one voxel of the border. Zero offsets give
    exactly a zero-padded k×k convolution with both.

    Args:
        conv_op: ``nn.Conv2d`` or ``nn.Conv3d``; selects 2D or 3D.
        in_channels: C_in.
        out_channels: C_out.
        kernel_size: k of the offset convolution and of the deformable kernel.
        reduction: C_in / sampled channels (S2CA-Net: 96 / 12 = 8).
        attention_kernel: kernel of the spatial attention on the offsets (S2CA-Net: 7).
        border: sampling rule at the border, "zeros" or "floor" (the original's; see ``deformable_sample``).

    Shapes:
        (B, C_in, *S) → (B, C_out, *S).
    """

    def __init__(self, conv_op: type[nn.Module], in_channels: int, out_channels: int, kernel_size: int = 3,
                 reduction: int = 12, attention_kernel: int = 7, border: str = "zeros") -> None:
        super().__init__()
        sampled = max(1, in_channels // reduction)
        self.reduce = conv_op(in_channels, sampled, 1, bias=False)
        self.deform = DeformableConv(conv_op, sampled, out_channels, kernel_size, border=border)
        self.offset = conv_op(sampled, self.deform.offset_channels, kernel_size, padding=kernel_size // 2,
                              bias=False)
        self.offset_attention = SpatialAttentionMap(conv_op, attention_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.reduce(x)
        offsets = self.offset(z)
        offsets = offsets * self.offset_attention(offsets)
        return self.deform(z, offsets)
