"""S2CA-Net: Shape-Scale Co-Awareness Network for 3D brain tumour segmentation.

Paper: Zhou, Jiang, Li, Hu & Zheng, "Shape-Scale Co-Awareness Network for 3D Brain Tumor Segmentation", submitted
to IEEE Transactions on Medical Imaging (github.com/jiangyu945/S2CA-Net, class ``UNet_LGSM_MCA_MSADC_Plus``).

A residual CNN encoder-decoder (depthwise-separable convolutions, InstanceNorm + PReLU) with three additions:
  * LGSM, local-global scale mixer: tri-planar MetaFormer blocks ("former") beside the residual blocks at 1/4 and
    1/8 resolution, each plane folding the third axis into channels;
  * MCA, multi-level context aggregator at the bottleneck: all encoder levels down-projected to 1/8, an SE gate,
    a residual conv branch turned into a spatial attention map, and a tri-planar axial-shift MLP (VAS-MLP);
  * MS-ADC, multi-scale attentive deformable convolution on the skips (``blocks.AttentiveDeformableConv``).

Re-implemented from a written description of the original: the same parameter tensors (names are our own)
except the original's 32,787 never-used ones (unused shortcut convolutions and PReLU slopes, which break DDP).
``convert_original_state_dict`` loads the original's weights. The differences from the original, with their
measured effect on the outputs, are listed in ``S2CANet``'s docstring; ``S2CANet(..., original_compatible=True)``
computes what the original computes (the same outputs to float32 rounding).
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import AttentionGate, AttentiveDeformableConv, ChannelGate, InstanceNorm, SpatialAttentionMap
from .blocks import depthwise_conv
from .blocks.checkpointing import checkpointed
from .blocks.ops import crop_to_size, deep_supervision_scales, downsampled_size, pad_to_size
from .weight_conversion import BATCH_NORM_ENTRIES, RenameRule, rename_keys

Size3D = tuple[int, int, int]


class DWConvNorm(nn.Module):
    """Depthwise k³ conv (stride s, no bias) → pointwise 1×1×1 conv (bias) → InstanceNorm → PReLU (one slope).

    Args:
        in_channels, out_channels: C_in, C_out.
        stride: stride of the depthwise convolution.
        kernel_size: k (3 in S2CA-Net), 'same' padding.

    Shapes:
        (B, C_in, D, H, W) → (B, C_out, ceil(D/s), ceil(H/s), ceil(W/s)).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 3) -> None:
        super().__init__()
        self.depthwise = nn.Conv3d(in_channels, in_channels, kernel_size, stride, kernel_size // 2,
                                   groups=in_channels, bias=False)
        self.pointwise = nn.Conv3d(in_channels, out_channels, 1)
        self.norm = InstanceNorm(out_channels)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.pointwise(depthwise_conv(self.depthwise, x))))


class ResBlock(nn.Module):
    """Residual block of S2CA-Net: two DWConvNorm (the first strided) plus a shortcut, then PReLU.

    The shortcut is a 1×1×1 conv (stride s, no bias) + InstanceNorm when the shape changes, else the identity
    (the original also creates the unused conv then; it is left out here).

    Args:
        in_channels, out_channels: C_in, C_out.
        stride: s.

    Shapes:
        (B, C_in, D, H, W) → (first DWConvNorm output, block output), both (B, C_out, ceil(D/s), ...); the first is
        what the encoder's tri-planar blocks take as input.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = DWConvNorm(in_channels, out_channels, stride)
        self.conv2 = DWConvNorm(out_channels, out_channels)
        self.shortcut = (nn.Sequential(nn.Conv3d(in_channels, out_channels, 1, stride, bias=False),
                                       InstanceNorm(out_channels))
                         if in_channels != out_channels or stride != 1 else nn.Identity())
        self.act = nn.PReLU()

    def forward_with_first(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = self.conv1(x)
        return first, self.act(self.conv2(first) + self.shortcut(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_first(x)[1]


class MetaFormerBlock2D(nn.Module):
    """MetaFormer block with a CBAM token mixer: x + γ₁·Mixer(GN(x)), then x + γ₂·MLP(GN(x)).

    Mixer = CBAM channel attention (avg + max, ratio 16) → CBAM spatial attention (7×7) → 1×1 conv (bias);
    MLP = 1×1 conv E→4E → GELU → 1×1 conv 4E→E; GN = GroupNorm with one group; γ = per-channel layer scale
    initialised to 1e-5. No drop-path. Initialised as the original (PoolFormer's rule): the MLP's convolutions and
    the channel attention's linear layers truncated normal (std 0.02) with zero biases, the rest PyTorch's default.

    Args:
        dim: E.
        mlp_ratio: hidden width of the MLP / E.
        layer_scale_init: initial γ.

    Shapes:
        (N, E, H, W) → (N, E, H, W).
    """

    def __init__(self, dim: int, mlp_ratio: int = 4, layer_scale_init: float = 1e-5) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(1, dim)
        self.channel_attention = ChannelGate(dim, 16, pools=("avg", "max"), bias=False)
        self.spatial_attention = SpatialAttentionMap(nn.Conv2d, 7)
        self.mix = nn.Conv2d(dim, dim, 1)
        self.norm2 = nn.GroupNorm(1, dim)
        self.mlp = nn.Sequential(nn.Conv2d(dim, mlp_ratio * dim, 1), nn.GELU(), nn.Conv2d(mlp_ratio * dim, dim, 1))
        self.layer_scale1 = nn.Parameter(torch.full((dim, 1, 1), layer_scale_init))
        self.layer_scale2 = nn.Parameter(torch.full((dim, 1, 1), layer_scale_init))
        for layer in (self.channel_attention.mlp[0], self.channel_attention.mlp[2], self.mlp[0], self.mlp[2]):
            nn.init.trunc_normal_(layer.weight, std=0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = self.channel_attention(self.norm1(x))
        mixed = self.mix(mixed * self.spatial_attention(mixed))
        x = x + self.layer_scale1 * mixed
        return x + self.layer_scale2 * self.mlp(self.norm2(x))


class MetaFormer2D(nn.Module):
    """Plane MetaFormer of the tri-planar blocks: 1×1 conv C→E, L blocks, GroupNorm(1), 1×1 conv E→C (with biases).

    Args:
        channels: C.
        embed_dim: E.
        depth: L.

    Shapes:
        (N, C, H, W) → (N, C, H, W).
    """

    def __init__(self, channels: int, embed_dim: int, depth: int) -> None:
        super().__init__()
        self.embed = nn.Conv2d(channels, embed_dim, 1)
        self.blocks = nn.Sequential(*(MetaFormerBlock2D(embed_dim) for _ in range(depth)))
        self.norm = nn.GroupNorm(1, embed_dim)
        self.project = nn.Conv2d(embed_dim, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.norm(self.blocks(self.embed(x))))


def _fold_axis_into_channels(x: torch.Tensor, axis: int) -> torch.Tensor:
    """(B, C, S0, S1, S2) → (B, C·S_axis, remaining two axes), channel-major (index c·S_axis + s)."""
    order = [0, 1, 2 + axis] + [2 + a for a in range(3) if a != axis]
    moved = x.permute(order)
    return moved.reshape(moved.shape[0], -1, *moved.shape[3:])


def _unfold_axis_from_channels(x: torch.Tensor, axis: int, channels: int) -> torch.Tensor:
    """Inverse of ``_fold_axis_into_channels``: (B, C·S_axis, ., .) → (B, C, S0, S1, S2)."""
    moved = x.view(x.shape[0], channels, -1, *x.shape[2:])
    return moved.permute(_restore_order(axis, moved_to=2, channel_position=1))


def _restore_order(axis: int, moved_to: int, channel_position: int) -> list[int]:
    """Permutation back to (B, C, S0, S1, S2) from a layout that holds spatial ``axis`` at ``moved_to``, C at
    ``channel_position`` and the two other spatial axes, in order, at positions 3 and 4."""
    remaining = [a for a in range(3) if a != axis]
    positions = {axis: moved_to, remaining[0]: 3, remaining[1]: 4}
    return [0, channel_position] + [positions[a] for a in range(3)]


class TriPlanarFormer(nn.Module):
    """Global branch of LGSM (``PoolFormerBlock3D_Light`` there): a MetaFormer on each of the three planes.

    For each spatial axis a, the volume is seen as a 2D image of the other two axes with axis a folded into the
    channels (C·S_a); a 1×1 conv C·S_a → C (bias) reads it, the shared ``MetaFormer2D`` processes it, a 1×1 conv
    C → C·S_a (bias) writes it back. The three results are concatenated (3C) and fused by a 1×1×1 conv → C'.

    The fold convolutions depend on the spatial size. For a cubic size S (the original: 32³ and 16³ at the 128³
    patch) one fold pair is shared by the three planes, as in the original, and the planes run as one batch.
    For a non-cubic size (our generalisation) each plane has its own fold pair sized for its axis; the MetaFormer
    stays shared.

    Args:
        in_channels: C.
        out_channels: C'.
        size: (S0, S1, S2), the spatial size the block is built for (inputs must have exactly this size).
        embed_dim: E of the MetaFormer.
        depth: MetaFormer blocks.

    Shapes:
        (B, C, S0, S1, S2) → (B, C', S0, S1, S2).
    """

    def __init__(self, in_channels: int, out_channels: int, size: Sequence[int], embed_dim: int,
                 depth: int) -> None:
        super().__init__()
        self.size = tuple(int(s) for s in size)
        self.channels = in_channels
        self.shared_fold = len(set(self.size)) == 1
        fold_sizes = self.size[:1] if self.shared_fold else self.size
        self.fold_in = nn.ModuleList(nn.Conv2d(in_channels * s, in_channels, 1) for s in fold_sizes)
        self.fold_out = nn.ModuleList(nn.Conv2d(in_channels, in_channels * s, 1) for s in fold_sizes)
        self.former = MetaFormer2D(in_channels, embed_dim, depth)
        self.fuse = nn.Conv3d(3 * in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[2:]) != self.size:
            raise ValueError(f"TriPlanarFormer was built for spatial size {self.size}, got {tuple(x.shape[2:])}")
        planes = [_fold_axis_into_channels(x, axis) for axis in range(3)]
        if self.shared_fold:
            # same weights and shapes for the three planes: one batch of 3B planes
            batch = x.shape[0]
            out = self.fold_out[0](self.former(self.fold_in[0](torch.cat(planes))))
            planes = out.split(batch)
        else:
            planes = [fold_out(self.former(fold_in(p)))
                      for p, fold_in, fold_out in zip(planes, self.fold_in, self.fold_out)]
        volumes = [_unfold_axis_from_channels(p, axis, self.channels) for axis, p in enumerate(planes)]
        return self.fuse(torch.cat(volumes, dim=1))


class DropPath(nn.Module):
    """Stochastic depth per sample (Huang et al., 2016): zero a sample's residual branch with probability p in
    training and scale the kept ones by 1/(1-p).

    Shapes:
        (N, ...) → (N, ...).
    """

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


def _shift_channel_groups(x: torch.Tensor, axis: int, groups: int, direction: int = 1) -> torch.Tensor:
    """Zero-filled shift of channel group i by direction·(i - groups // 2) positions along ``axis``.

    Channels are split like ``torch.chunk`` (equal groups, the last one smaller).
    """
    half = groups // 2
    padded = F.pad(x, [half, half] * 2)
    length = x.shape[axis]
    shifted = [chunk.narrow(axis, half - direction * (i - half), length)
               for i, chunk in enumerate(padded.chunk(groups, dim=1))]
    out = torch.cat(shifted, dim=1)
    other = 2 if axis == 3 else 3  # crop the padding of the other plane axis
    return out.narrow(other, half, x.shape[other])


class AxialShift(nn.Module):
    """Axial shift token mixer of VAS-MLP (AS-MLP, Lian et al., ICLR 2022, with diagonal shifts).

    1×1 conv → GN(1) → GELU → four zero-filled shifted copies: along W; that along H ("left diagonal"); along H;
    that along W in the opposite direction ("right diagonal"). The two W-first copies share one 1×1 conv, the two
    H-first copies another, each followed by GELU; sum → GN(1) → 1×1 conv. All 1×1 convs have a bias.

    Args:
        dim: E.
        shift: number of channel groups (shifts -shift//2 .. shift//2).

    Shapes:
        (N, E, H, W) → (N, E, H, W).
    """

    def __init__(self, dim: int, shift: int = 5) -> None:
        super().__init__()
        self.shift = shift
        self.conv_in = nn.Conv2d(dim, dim, 1)
        self.norm_in = nn.GroupNorm(1, dim)
        self.conv_w_first = nn.Conv2d(dim, dim, 1)
        self.conv_h_first = nn.Conv2d(dim, dim, 1)
        self.norm_out = nn.GroupNorm(1, dim)
        self.conv_out = nn.Conv2d(dim, dim, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm_in(self.conv_in(x)))
        along_w = _shift_channel_groups(x, 3, self.shift)
        left_diagonal = _shift_channel_groups(along_w, 2, self.shift)
        along_h = _shift_channel_groups(x, 2, self.shift)
        right_diagonal = _shift_channel_groups(along_h, 3, self.shift, direction=-1)
        batch = x.shape[0]
        # each shared conv runs once on its two copies
        w_first = self.act(self.conv_w_first(torch.cat((along_w, left_diagonal)))).split(batch)
        h_first = self.act(self.conv_h_first(torch.cat((along_h, right_diagonal)))).split(batch)
        return self.conv_out(self.norm_out(w_first[0] + w_first[1] + h_first[0] + h_first[1]))


class AxialShiftBlock(nn.Module):
    """y = x + DropPath(AxialShift(GN(x))); y + DropPath(MLP(GN(y))), MLP 1×1 conv E→4E → GELU → 1×1 conv.

    Shapes:
        (N, E, H, W) → (N, E, H, W).
    """

    def __init__(self, dim: int, shift: int, drop_path: float, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(1, dim)
        self.mixer = AxialShift(dim, shift)
        self.norm2 = nn.GroupNorm(1, dim)
        self.mlp = nn.Sequential(nn.Conv2d(dim, mlp_ratio * dim, 1), nn.GELU(), nn.Conv2d(mlp_ratio * dim, dim, 1))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.mixer(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TriPlanarAxialShiftMLP(nn.Module):
    """VAS-MLP of MCA (``AspmlpBlock_Light_B`` there): a shared 2D axial-shift MLP on the three planes.

    Each spatial axis is folded into the batch, giving the stacks of planes of the other two axes; the shared
    plane MLP = 1×1 conv C→E (bias) + GN(1), ``depth`` axial-shift blocks (drop-path rising linearly from 0 to
    ``drop_path``), 1×1 conv E→C (bias). The three results are concatenated (3C) → 1×1×1 conv → C' (bias).
    Works at any size (the original asserts 16×16 planes, which its ops do not need).

    The original returns the planes of axis 1 (its H-D planes) with axes 0 and 1 swapped: it un-permutes them
    with ``reshape(B, W, C, H, D).permute(0, 2, 1, 3, 4)``, which only fits because its size is cubic. Here each
    plane goes back to its own position; ``original_compatible=True`` swaps as the original does.

    Args:
        in_channels: C.
        out_channels: C'.
        embed_dim: E.
        depth: axial-shift blocks.
        shift: channel groups of the shifts.
        drop_path: drop-path rate of the last block.
        original_compatible: return the axis-1 planes with axes 0 and 1 swapped, as the original (needs S0 = S1).

    Shapes:
        (B, C, S0, S1, S2) → (B, C', S0, S1, S2).
    """

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int = 128, depth: int = 4, shift: int = 5,
                 drop_path: float = 0.1, original_compatible: bool = False) -> None:
        super().__init__()
        self.original_compatible = original_compatible
        self.embed = nn.Conv2d(in_channels, embed_dim, 1)
        self.embed_norm = nn.GroupNorm(1, embed_dim)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.Sequential(*(AxialShiftBlock(embed_dim, shift, rate) for rate in rates))
        self.project = nn.Conv2d(embed_dim, in_channels, 1)
        self.fuse = nn.Conv3d(3 * in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[:2]
        volumes = []
        for axis in range(3):
            order = [0, 2 + axis, 1] + [2 + a for a in range(3) if a != axis]
            moved = x.permute(order)
            planes = moved.reshape(-1, channels, *moved.shape[3:])
            planes = self.project(self.blocks(self.embed_norm(self.embed(planes))))
            planes = planes.view(batch, moved.shape[1], channels, *moved.shape[3:])
            volumes.append(planes.permute(_restore_order(axis, moved_to=1, channel_position=2)))
        if self.original_compatible:
            if x.shape[2] != x.shape[3]:
                raise ValueError(f"original_compatible swaps spatial axes 0 and 1 of a plane stack, which needs "
                                 f"them of equal size; got {tuple(x.shape[2:])}")
            volumes[1] = volumes[1].transpose(2, 3)
        return self.fuse(torch.cat(volumes, dim=1))


class MultiLevelContextAggregator(nn.Module):
    """MCA at the bottleneck: bottom = x3 + SA(CB(m)) · VAS-MLP(m), m = SE(concat(down(x0), down(x1), down(x2), x3)).

    down = strided convolutions to the bottleneck size (kernel = stride = 8, 4, 2; bias); SE ratio 16;
    CB = ResBlock(ΣC → C3) → ResBlock(C3 → C3); SA = 1×1×1 spatial attention map (channel max and mean).

    Args:
        channels: (C0, C1, C2, C3) of the encoder levels.
        embed_dim, depth, shift: of the VAS-MLP.
        original_compatible: the VAS-MLP's swapped axis-1 planes of the original (``TriPlanarAxialShiftMLP``).

    Shapes:
        x0..x3 at strides 1, 2, 4, 8 → (B, C3, size of x3).
    """

    def __init__(self, channels: Sequence[int], embed_dim: int, depth: int, shift: int,
                 original_compatible: bool = False) -> None:
        super().__init__()
        levels = len(channels) - 1
        self.down = nn.ModuleList(nn.Conv3d(c, c, 2 ** (levels - i), 2 ** (levels - i))
                                  for i, c in enumerate(channels[:-1]))
        total = sum(channels)
        self.squeeze_excite = ChannelGate(total, 16, pools=("avg",), bias=False)
        self.conv_branch = nn.Sequential(ResBlock(total, channels[-1]), ResBlock(channels[-1], channels[-1]))
        self.spatial_attention = SpatialAttentionMap(nn.Conv3d, 1)
        self.mlp_branch = TriPlanarAxialShiftMLP(total, channels[-1], embed_dim, depth, shift,
                                                 original_compatible=original_compatible)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        merged = torch.cat([down(f) for down, f in zip(self.down, features[:-1])] + [features[-1]], dim=1)
        merged = self.squeeze_excite(merged)
        attention = self.spatial_attention(self.conv_branch(merged))
        return features[-1] + attention * self.mlp_branch(merged)


class MultiScaleAttentiveDeformableConv(nn.Module):
    """MS-ADC on the skips: levels 0-2 meet at level 1, pass SE and an attentive deformable conv, and return.

    s = concat(conv k3 s2 (x0), x1, transposed conv k2 s2 (x2)) → SE(3·C1) → AttentiveDeformableConv(3·C1 →
    3·C1, 3·C1 / reduction sampled channels) = t; x0 + transposed conv k2 s2 (t), x1 + 1×1×1 conv (t),
    x2 + conv k2 s2 (t) (all with bias).

    Args:
        channels: (C0, C1, C2) of encoder levels 0-2.
        reduction: input channels / sampled channels of the deformable conv (8 sampled channels in S2CA-Net).
        original_compatible: the original's border rule in the deformable convolution (``border="floor"``).

    Shapes:
        x0, x1, x2 at strides 1, 2, 4 → the refined x0, x1, x2 (same shapes).
    """

    def __init__(self, channels: Sequence[int], reduction: int = 12, original_compatible: bool = False) -> None:
        super().__init__()
        c0, c1, c2 = channels
        mixed = 3 * c1
        self.from_level0 = nn.Conv3d(c0, c1, 3, 2, 1)
        self.from_level2 = nn.ConvTranspose3d(c2, c1, 2, 2)
        self.squeeze_excite = ChannelGate(mixed, 16, pools=("avg",), bias=False)
        self.deformable = AttentiveDeformableConv(nn.Conv3d, mixed, mixed, 3, reduction,
                                                  border="floor" if original_compatible else "zeros")
        self.to_level0 = nn.ConvTranspose3d(mixed, c0, 2, 2)
        self.to_level1 = nn.Conv3d(mixed, c1, 1)
        self.to_level2 = nn.Conv3d(mixed, c2, 2, 2)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mixed = torch.cat((self.from_level0(x0), x1, self.from_level2(x2)), dim=1)
        t = self.deformable(self.squeeze_excite(mixed))
        return x0 + self.to_level0(t), x1 + self.to_level1(t), x2 + self.to_level2(t)


class S2CAEncoder(nn.Module):
    """LGSM encoder: residual blocks at strides 1, 2, 4, 8; levels 2 and 3 add a tri-planar former on the first
    conv's output (x = ResBlock(x) + TriPlanarFormer(first conv of that ResBlock)).

    Shapes:
        (B, C_in, *P) → [x0..x3] at strides 1, 2, 4, 8 with ``channels`` channels.

    ``activation_checkpointing`` (attribute, default False, set by ``S2CANet``): recompute the tri-planar formers
    in the backward pass.
    """

    activation_checkpointing = False

    def __init__(self, input_channels: int, channels: Sequence[int], patch_size: Size3D,
                 embed_dims: Sequence[int], depths: Sequence[int]) -> None:
        super().__init__()
        strides = [1] + [2] * (len(channels) - 1)
        in_channels = [input_channels] + list(channels[:-1])
        self.stages = nn.ModuleList(ResBlock(cin, cout, s) for cin, cout, s in zip(in_channels, channels, strides))
        first_former = len(channels) - len(embed_dims)
        self.formers = nn.ModuleList(
            TriPlanarFormer(channels[level], channels[level], [p // 2 ** level for p in patch_size], embed, depth)
            for level, embed, depth in zip(range(first_former, len(channels)), embed_dims, depths))
        self.first_former = first_former

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for level, stage in enumerate(self.stages):
            if level < self.first_former:
                x = stage(x)
            else:
                first, x = stage.forward_with_first(x)
                former = self.formers[level - self.first_former]
                x = x + checkpointed(former, first, enabled=self.activation_checkpointing and self.training)
            features.append(x)
        return features


class S2CADecoder(nn.Module):
    """Decoder: d3 = ResBlock(bottom) + former(bottom); then per level, concat(attention-gated skip, ×2 trilinear
    upsampled coarser output) → ResBlock (+ tri-planar former where the encoder has one, except at the bottom);
    a 1×1×1 head (bias) per level.

    The attention gates use BatchNorm and ReLU and a stride-2 skip projection, with the coefficient upsampled ×2
    (``blocks.AttentionGate``). ``deep_supervision`` is read at call time (nnU-Net switches it).

    Shapes:
        refined skips x0..x2 and bottom (stride 8) → logits at stride 1, or [strides 1, 2, 4, 8] with deep
        supervision.

    ``activation_checkpointing`` (attribute, default False, set by ``S2CANet``): recompute the tri-planar formers
    in the backward pass.
    """

    activation_checkpointing = False

    def __init__(self, channels: Sequence[int], num_classes: int, patch_size: Size3D, embed_dims: Sequence[int],
                 depths: Sequence[int], deep_supervision: bool) -> None:
        super().__init__()
        self.deep_supervision = deep_supervision
        levels = len(channels)
        bottom = levels - 1
        bottom_size = [p // 2 ** bottom for p in patch_size]
        self.bottom_block = ResBlock(channels[-1], channels[-1])
        self.bottom_former = TriPlanarFormer(channels[-1], channels[-1], bottom_size, embed_dims[-1], depths[-1])
        self.gates = nn.ModuleList()
        self.blocks = nn.ModuleList()
        self.formers = nn.ModuleDict()
        for level in reversed(range(bottom)):
            skip, coarser = channels[level], channels[level + 1]
            self.gates.append(AttentionGate(nn.Conv3d, skip, coarser, skip, skip_stride=2, bias=False,
                                            norm_op=nn.BatchNorm3d, nonlin=nn.ReLU))
            self.blocks.append(ResBlock(skip + coarser, skip))
            former_index = level - (levels - len(embed_dims))
            if 0 <= former_index < len(embed_dims) - 1:
                self.formers[str(level)] = TriPlanarFormer(skip + coarser, skip, [p // 2 ** level for p in patch_size],
                                                          embed_dims[former_index], depths[former_index])
        self.heads = nn.ModuleList(nn.Conv3d(c, num_classes, 1) for c in channels)

    def forward(self, skips: Sequence[torch.Tensor], bottom: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        checkpointing = self.activation_checkpointing and self.training
        x = self.bottom_block(bottom) + checkpointed(self.bottom_former, bottom, enabled=checkpointing)
        outputs = [x]
        for gate, block, level in zip(self.gates, self.blocks, reversed(range(len(skips)))):
            upsampled = F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False)
            merged = torch.cat((gate(skips[level], x), upsampled), dim=1)
            x = block(merged)
            if str(level) in self.formers:
                x = x + checkpointed(self.formers[str(level)], merged, enabled=checkpointing)
            outputs.insert(0, x)
        if not self.deep_supervision:
            return self.heads[0](x)
        return [head(out) for head, out in zip(self.heads, outputs)]


class S2CANet(nn.Module):
    """S2CA-Net (Zhou et al., submitted to IEEE TMI): CNN encoder-decoder with tri-planar MetaFormers (LGSM), a
    multi-level context aggregator (MCA) and multi-scale attentive deformable convolution (MS-ADC).

    Topology (defaults = the original): levels at strides 1/2/4/8 with 16/32/64/128 channels; residual blocks of
    depthwise-separable convs with InstanceNorm (not affine) + PReLU; tri-planar formers (embedding 256, 4 blocks
    at level 2; 512, 2 blocks at level 3) in the encoder at levels 2 and 3 and in the decoder at levels 3 and 2;
    MCA with a VAS-MLP (embedding 128, 4 blocks, 5 shift groups); MS-ADC at level 1 with 8 sampled channels;
    attention gates with BatchNorm on the skips; four 1×1×1 heads.

    The size lock: the tri-planar formers fold one axis into channels, so their fold convolutions are built for
    ``patch_size`` (the original: only 128³). Cubic patch: one fold pair per former shared by the three planes, as
    in the original (same parameters); non-cubic patch: one fold pair per plane (our generalisation, e.g.
    C·S_a → C for plane a). Each axis of the patch must be a multiple of 8 and at least 16 (``check_patch_size``).
    Inputs smaller than the patch are zero-padded at the end of each axis and the outputs cropped back; larger
    inputs raise a ValueError. nnU-Net's sliding window uses the plan's patch as tile, so it always fits.

    Args:
        input_channels: channels of the input image (any count; BraTS: 4).
        num_classes: output channels (logits; region-based training: one per region).
        deep_supervision: initial value of ``self.decoder.deep_supervision`` (read at call time).
        patch_size: (D, H, W) the network is built for.
        channels: channels of the four levels.
        embed_dims: MetaFormer width of the formers at levels 2 and 3.
        encoder_depths, decoder_depths: MetaFormer blocks of those formers in the encoder and the decoder (the
            original passes its ``layers=[4, 2]`` to the decoder only; the encoder keeps its own default [6, 2]).
        mlp_embed_dim, mlp_depth, mlp_shift: VAS-MLP width, depth and shift groups.
        deformable_reduction: MS-ADC input channels / sampled channels.
        activation_checkpointing: recompute the tri-planar formers (encoder and decoder) and the MS-ADC in the
            backward pass instead of keeping their activations (``torch.utils.checkpoint``; only in training
            with gradients on; no state-dict change).
        original_compatible: compute exactly what the original code computes where this implementation
            deliberately differs (see "Differences from the original" below; the state dict is the same). Needs a
            cubic patch, the only size the original runs at.

    Shapes:
        input (B, input_channels, D, H, W) with each axis at most ``patch_size``.
        ``decoder.deep_supervision`` False → logits (B, num_classes, D, H, W) (finest head).
        True → [finest (B, K, D, H, W), (B, K, ceil(D/2), ...), (B, K, ceil(D/4), ...), (B, K, ceil(D/8), ...)],
        each head at its native resolution (the original upsamples all four to the input size; nnU-Net
        downsamples the targets instead, see ``deep_supervision_scales``).

    Differences from the original, measured against the original code (jiangyu945/S2CA-Net at daf7dff) on the
    same random weights (every parameter and normalisation statistic randomised; converted with
    ``convert_original_state_dict``) and input, eval mode, 4 channels and 4 outputs; effect = max |difference| /
    max |output| of the logits at patches 32³ / 64³ / 128³ (max |offset| of the deformable convolution 2.8 / 2.9 /
    3.9 voxels):
      * VAS-MLP planes: the original returns its H-D planes with H and W swapped (see ``TriPlanarAxialShiftMLP``);
        here each plane goes back to its place. Effect alone 0.047 / 0.074 / 0.29. ``original_compatible=True``
        swaps as the original.
      * Deformable-convolution border: here samples outside the volume are multi-linear with zeros beyond it; the
        original moves positions outside the volume to their floor (``blocks.deformable_sample``, ``border``).
        Effect alone 0.079 / 0.042 / 0.089. ``original_compatible=True`` uses the original's rule.
      * Both (the default): 0.087 / 0.080 / 0.29; with ``original_compatible=True``: 9.6e-7 / 1.1e-6 / 1.0e-6.
      * The attention gates' ψ convolution has a bias (``blocks.AttentionGate``), 3 parameters the original lacks;
        the converter sets them to zero, the original's function (with the gates' BatchNorm in training mode the
        bias cancels; its running mean absorbs it).
      * With deep supervision the heads keep their native resolutions (nnU-Net downsamples the targets); the
        original upsamples them to the input size, which equals ours upsampled trilinearly (measured: 1e-6). This
        changes where the loss is computed, not the network's function; no keyword.
      * Any patch (the original: only 128³; a non-cubic patch has one fold pair per plane), smaller inputs padded;
        the never-used parameters are left out (the converter drops them).
      * Initialisation as the original (``MetaFormerBlock2D``: truncated normal, std 0.02, for its MLP and channel
        attention; PyTorch's defaults elsewhere, as there).
    Measured with a script outside the repository (the original's code is not part of it): both networks built
    from the same converted weights, ``net(x)`` against the original's ``forward(x)['out'][-1]``.

    Measured at the original configuration (4 channels, 4 outputs, 128³; the original measures 21,477,799
    parameters of which 32,787 are never used, and 86.27 GMAC):
        21,445,015 parameters (the 21,445,012 the original uses, plus the 3 ψ biases of the attention gates);
        86.23 GMAC (-0.05 %; torch.utils.flop_counter as ``profiling.count_macs`` counts it, the deformable sampling
        not counted), measured on the meta device (shapes only) in seconds:
        python -c "import torch; from nnunet_ext.architectures import S2CANet as N;
        from nnunet_ext.architectures.profiling import count_macs, count_parameters; torch.set_default_device('meta');
        n = N(4, 4); print(count_parameters(n), count_macs(n, (1, 4, 128, 128, 128)))"
    """

    total_stride: int = 8
    minimum_axis_size: int = 16
    deep_supervision_strides: tuple[int, ...] = (1, 2, 4, 8)

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False,
                 patch_size: Sequence[int] = (128, 128, 128), channels: Sequence[int] = (16, 32, 64, 128),
                 embed_dims: Sequence[int] = (256, 512), encoder_depths: Sequence[int] = (6, 2),
                 decoder_depths: Sequence[int] = (4, 2), mlp_embed_dim: int = 128,
                 mlp_depth: int = 4, mlp_shift: int = 5, deformable_reduction: int = 12,
                 original_compatible: bool = False, activation_checkpointing: bool = False) -> None:
        super().__init__()
        if len(channels) != 4 or not len(embed_dims) == len(encoder_depths) == len(decoder_depths) == 2:
            raise ValueError("S2CANet has four levels (channels) and formers at levels 2 and 3 (embed_dims, "
                             "encoder_depths, decoder_depths)")
        self.check_patch_size(patch_size)
        if original_compatible and len(set(patch_size)) != 1:
            raise ValueError(f"original_compatible=True needs a cubic patch (the original's axial-shift MLP swaps "
                             f"two axes of one plane stack, and it runs only at 128³); got {list(patch_size)}")
        self.original_compatible = original_compatible
        self.patch_size: Size3D = tuple(int(p) for p in patch_size)
        self.encoder = S2CAEncoder(input_channels, channels, self.patch_size, embed_dims, encoder_depths)
        self.skip_refinement = MultiScaleAttentiveDeformableConv(channels[:3], deformable_reduction,
                                                                 original_compatible)
        self.context = MultiLevelContextAggregator(channels, mlp_embed_dim, mlp_depth, mlp_shift,
                                                   original_compatible)
        self.decoder = S2CADecoder(channels, num_classes, self.patch_size, embed_dims, decoder_depths,
                                   deep_supervision)
        self.activation_checkpointing = activation_checkpointing
        self.encoder.activation_checkpointing = self.decoder.activation_checkpointing = activation_checkpointing

    @classmethod
    def check_patch_size(cls, patch_size: Sequence[int]) -> None:
        """Raise ValueError unless ``patch_size`` has three axes, each a multiple of 8 and at least 16."""
        if len(patch_size) != 3:
            raise ValueError(f"S2CANet is a 3D network: patch_size needs 3 axes, got {list(patch_size)}")
        if any(p < cls.minimum_axis_size or p % cls.total_stride for p in patch_size):
            raise ValueError(
                f"S2CANet patch size {list(patch_size)} is not supported: every axis must be a multiple of "
                f"{cls.total_stride} and at least {cls.minimum_axis_size} (minimum patch "
                f"{[cls.minimum_axis_size] * 3}), so that its stride-8 level has 2 positions per axis")

    @classmethod
    def nearest_patch_size(cls, patch_size: Sequence[int]) -> list[int]:
        """The patch the network accepts nearest to ``patch_size``: each axis rounded to a multiple of 8 (halves
        up). Raises ValueError naming the minimum if an axis is below it."""
        if any(p < cls.minimum_axis_size for p in patch_size):
            raise ValueError(
                f"patch size {list(patch_size)} is below S2CANet's minimum of {cls.minimum_axis_size} per axis "
                f"(minimum patch {[cls.minimum_axis_size] * len(patch_size)}); plan with larger images or a "
                f"larger patch")
        return [int(math.floor(p / cls.total_stride + 0.5)) * cls.total_stride for p in patch_size]

    @classmethod
    def deep_supervision_scales(cls, patch_size: Sequence[int]) -> list[list[float]]:
        """Scales of the deep-supervision outputs relative to ``patch_size``, full resolution first: 1, 1/2, 1/4,
        1/8 per axis (the patch is a multiple of 8)."""
        return deep_supervision_scales(patch_size, cls.deep_supervision_strides)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        size = list(x.shape[2:])
        if len(size) != 3 or any(s > p for s, p in zip(size, self.patch_size)):
            raise ValueError(
                f"S2CANet was built for patch size {list(self.patch_size)} and takes inputs up to that size; got "
                f"spatial size {size}. Build it with a patch_size covering the input (nnU-Net: predict with the "
                f"plan the model was trained with, whose patch is the sliding-window tile)")
        padded = list(self.patch_size)
        x0, x1, x2, x3 = self.encoder(pad_to_size(x, padded))
        bottom = self.context([x0, x1, x2, x3])
        x0, x1, x2 = checkpointed(self.skip_refinement, x0, x1, x2,
                                  enabled=self.activation_checkpointing and self.training)
        out = self.decoder([x0, x1, x2], bottom)
        if size == padded:
            return out
        if not isinstance(out, list):
            return crop_to_size(out, size)
        strides = self.deep_supervision_strides
        return [crop_to_size(o, downsampled_size(size, stride)) for o, stride in zip(out, strides)]


# ---- the original's weights ------------------------------------------------------------------------------------

# keys of the original's parameters that its forward never uses (dropped by the converter)
ORIGINAL_UNUSED_KEYS: tuple[str, ...] = (
    r".+\.identity_mapping\.act\.weight",  # the shortcut ConvNorms are built without activation
    r"gate\d_\d\.(?:W_g|W_x|psi\.0)\.act\.weight",  # so are the attention gates' ConvNorms
    r"(?:conv3_1|conv_bottom\.1)\.identity_mapping\.conv\.weight",  # blocks keeping their shape skip the shortcut conv
)


def _res_block_rules(original: str, ours: str) -> list[RenameRule]:
    """The original's ``ResBlock``/``ResFormerBlock`` (DWConvNorm ×2, shortcut ConvNorm, PReLU) → our ``ResBlock``."""
    source = re.escape(original)
    return [(rf"{source}\.conv([12])\.dwconv\.weight", rf"{ours}.conv\1.depthwise.weight"),
            (rf"{source}\.conv([12])\.pwconv\.(weight|bias)", rf"{ours}.conv\1.pointwise.\2"),
            (rf"{source}\.conv([12])\.act\.weight", rf"{ours}.conv\1.act.weight"),
            (rf"{source}\.identity_mapping\.conv\.weight", f"{ours}.shortcut.0.weight"),
            (rf"{source}\.act\.weight", f"{ours}.act.weight")]


def _former_rules(original: str, ours: str) -> list[RenameRule]:
    """The original's ``PoolFormerBlock3D_Light`` (fold convs, a PoolFormer with CBAM mixers) → ``TriPlanarFormer``."""
    source = re.escape(original)
    block = rf"{source}\.poolformer\.network\.0\.(\d+)"
    former = f"{ours}.former"
    return [(rf"{source}\.conv1x1_down\.(weight|bias)", rf"{ours}.fold_in.0.\1"),
            (rf"{source}\.conv1x1_up\.(weight|bias)", rf"{ours}.fold_out.0.\1"),
            (rf"{source}\.fuse_conv\.(weight|bias)", rf"{ours}.fuse.\1"),
            (rf"{source}\.poolformer\.patch_embed\.proj\.(weight|bias)", rf"{former}.embed.\1"),
            (rf"{source}\.poolformer\.norm\.(weight|bias)", rf"{former}.norm.\1"),
            (rf"{source}\.poolformer\.conv1x1\.(weight|bias)", rf"{former}.project.\1"),
            (rf"{block}\.layer_scale_([12])", rf"{former}.blocks.\1.layer_scale\2"),
            (rf"{block}\.(norm[12])\.(weight|bias)", rf"{former}.blocks.\1.\2.\3"),
            (rf"{block}\.token_mixer\.att\.channel_attention\.fc\.([02])\.weight",
             rf"{former}.blocks.\1.channel_attention.mlp.\2.weight"),
            (rf"{block}\.token_mixer\.att\.spacial_attention\.conv\.weight",
             rf"{former}.blocks.\1.spatial_attention.conv.weight"),
            (rf"{block}\.token_mixer\.conv\.(weight|bias)", rf"{former}.blocks.\1.mix.\2"),
            (rf"{block}\.mlp\.fc1\.(weight|bias)", rf"{former}.blocks.\1.mlp.0.\2"),
            (rf"{block}\.mlp\.fc2\.(weight|bias)", rf"{former}.blocks.\1.mlp.2.\2")]


def _axial_shift_mlp_rules() -> list[RenameRule]:
    """The original's ``AspmlpBlock_Light_B`` (an ``ASPMLP`` on three planes) → ``TriPlanarAxialShiftMLP``."""
    source, ours = r"BottomAspmlp_l4\.aspmlp", "context.mlp_branch"
    block = rf"{source}\.layers\.0\.blocks\.(\d+)"
    mixer = {"conv1": "conv_in", "norm1": "norm_in", "conv2_1": "conv_w_first", "conv2_2": "conv_h_first",
             "norm2": "norm_out", "conv3": "conv_out"}
    return [(rf"{source}\.patch_embed\.proj\.(weight|bias)", rf"{ours}.embed.\1"),
            (rf"{source}\.patch_embed\.norm\.(weight|bias)", rf"{ours}.embed_norm.\1"),
            (rf"{source}\.conv1x1\.(weight|bias)", rf"{ours}.project.\1"),
            (r"BottomAspmlp_l4\.fuse_conv\.(weight|bias)", rf"{ours}.fuse.\1"),
            (rf"{block}\.(norm[12])\.(weight|bias)", rf"{ours}.blocks.\1.\2.\3"),
            (rf"{block}\.mlp\.fc1\.(weight|bias)", rf"{ours}.blocks.\1.mlp.0.\2"),
            (rf"{block}\.mlp\.fc2\.(weight|bias)", rf"{ours}.blocks.\1.mlp.2.\2"),
            *((rf"{block}\.axial_shift\.{name}\.(weight|bias)", rf"{ours}.blocks.\1.mixer.{new}.\2")
              for name, new in mixer.items())]


def _original_s2canet_rules() -> list[RenameRule]:
    """The original ``UNet_LGSM_MCA_MSADC_Plus`` (as its ``train.py`` builds it) → ``S2CANet``, layer by layer."""
    rules: list[RenameRule] = [(pattern, None) for pattern in ORIGINAL_UNUSED_KEYS]
    for level in range(4):
        rules += _res_block_rules(f"backbone.conv{level}_0", f"encoder.stages.{level}")
    rules += _former_rules("backbone.former2_0", "encoder.formers.0") + _former_rules("backbone.former3_0",
                                                                                      "encoder.formers.1")
    for level in range(3):
        rules.append((rf"down{2 ** (3 - level)}Pooling\.(weight|bias)", rf"context.down.{level}.\1"))
    rules += [(r"ca\.fc\.([02])\.weight", r"context.squeeze_excite.mlp.\1.weight"),
              *_res_block_rules("conv_bottom.0", "context.conv_branch.0"),
              *_res_block_rules("conv_bottom.1", "context.conv_branch.1"),
              (r"sa\.conv\.weight", "context.spatial_attention.conv.weight"), *_axial_shift_mlp_rules()]
    skip = "skip_refinement"
    rules += [(r"in_down01\.(weight|bias)", rf"{skip}.from_level0.\1"),
              (r"in_up21\.(weight|bias)", rf"{skip}.from_level2.\1"),
              (r"skip_ca\.fc\.([02])\.weight", rf"{skip}.squeeze_excite.mlp.\1.weight"),
              (r"skip_msadc\.conv_se\.weight", f"{skip}.deformable.reduce.weight"),
              (r"skip_msadc\.conv_kernel\.weight", f"{skip}.deformable.deform.projection.weight"),
              (r"skip_msadc\.offset_conv_kernel\.weight", f"{skip}.deformable.offset.weight"),
              (r"skip_msadc\.att\.conv\.weight", f"{skip}.deformable.offset_attention.conv.weight"),
              (r"out_up10\.(weight|bias)", rf"{skip}.to_level0.\1"),
              (r"out_1\.(weight|bias)", rf"{skip}.to_level1.\1"),
              (r"out_down12\.(weight|bias)", rf"{skip}.to_level2.\1")]
    rules += _res_block_rules("conv3_1", "decoder.bottom_block") + _former_rules("former3_1", "decoder.bottom_former")
    rules += _former_rules("former2_1", "decoder.formers.2")
    # AttentionGate(g, x) gates x: W_x acts on the gated skip (our θ), W_g on the coarser gate signal (our φ)
    for index, (coarser, level) in enumerate(((3, 2), (2, 1), (1, 0))):
        rules += _res_block_rules(f"conv{level}_1", f"decoder.blocks.{index}")
        for branch, name in (("W_x", "theta"), ("W_g", "phi"), ("psi.0", "psi")):
            gate = rf"gate{coarser}_{level}\.{re.escape(branch)}"
            rules += [(rf"{gate}\.conv\.weight", f"decoder.gates.{index}.{name}.weight"),
                      (rf"{gate}\.norm\.{BATCH_NORM_ENTRIES}", rf"decoder.gates.{index}.{name}_norm.\1")]
    return rules + [(r"convds(\d)\.(weight|bias)", r"decoder.heads.\1.\2")]


def convert_original_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict of the original S2CA-Net (github.com/jiangyu945/S2CA-Net, ``UNet_LGSM_MCA_MSADC_Plus`` as
    its ``train.py`` builds it; the ``'net'`` entry of its checkpoints) as one of ``S2CANet`` built with the same
    input channels, classes and (cubic) patch, and the default topology.

    Names follow a table of rules, one per original layer; the formers' layer scales are reshaped (E,) → (E, 1, 1).
    Dropped: the original's 32,787 never-used parameters (``ORIGINAL_UNUSED_KEYS``): the PReLU slopes of all
    ``identity_mapping`` and attention-gate ``ConvNorm`` layers (built with ``activation=False``) and the shortcut
    convolutions ``conv3_1.identity_mapping.conv`` and ``conv_bottom.1.identity_mapping.conv`` (blocks that keep
    their shape add the identity). Added: our attention gates' ψ biases (``decoder.gates.{0,1,2}.psi.bias``), which
    the original lacks, as zeros, which is the original's function; so the result loads with ``strict=True``.

    Raises:
        KeyError: a key of the original that has no counterpart here (naming it).
    """
    converted = rename_keys(state_dict, _original_s2canet_rules(), "S2CA-Net")
    for key, value in list(converted.items()):
        if re.fullmatch(r".+\.layer_scale[12]", key):
            converted[key] = value.reshape(-1, 1, 1)
        elif re.fullmatch(r"decoder\.gates\.\d\.psi\.weight", key):
            converted[key.removesuffix("weight") + "bias"] = value.new_zeros(1)
    return converted
