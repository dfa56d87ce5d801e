"""Helpers that map a convolution class to the matching dimension-specific operations, and the size helpers of the
networks (padding any input to the sizes their stages need, cropping outputs back, deep-supervision scales).

Blocks in this package receive the convolution class (``nn.Conv2d`` or ``nn.Conv3d``, as in
dynamic-network-architectures) and derive everything else that depends on the number of spatial axes from it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class InstanceNorm(nn.GroupNorm):
    """Instance normalisation (Ulyanov et al., 2016) for any number of spatial axes, via the group-norm kernel.

    Equals ``nn.InstanceNorm{1,2,3}d`` with ``track_running_stats=False`` (statistics per sample and channel,
    biased variance, optional per-channel affine), but keeps the input's memory format: the instance-norm kernel
    returns channels-first tensors, which forces layout copies around channels-last convolutions.

    Args:
        num_features: channels C.
        eps: added to the variance.
        affine: learnable per-channel scale and shift (``weight``/``bias`` of shape (C,), as in InstanceNorm).

    Shapes:
        input (B, C, *spatial) → output of the same shape and memory format.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = False) -> None:
        super().__init__(num_features, num_features, eps=eps, affine=affine)


_SPATIAL_DIMS = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
_INTERPOLATION_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}
_NORMS = {
    "batch": {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d},
    "instance": {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d},
}


def spatial_dims(conv_op: type[nn.Module]) -> int:
    """Number of spatial axes that ``conv_op`` (nn.Conv1d/2d/3d or a subclass) works on."""
    for base, dims in _SPATIAL_DIMS.items():
        if issubclass(conv_op, base):
            return dims
    raise ValueError(f"Unsupported convolution class {conv_op!r}: expected nn.Conv1d, nn.Conv2d or nn.Conv3d")


def interpolation_mode(conv_op: type[nn.Module]) -> str:
    """The (multi)linear ``F.interpolate`` mode for the dimensionality of ``conv_op``."""
    return _INTERPOLATION_MODES[spatial_dims(conv_op)]


def matching_norm(conv_op: type[nn.Module], kind: str) -> type[nn.Module]:
    """The normalisation class of ``kind`` ('batch' or 'instance') for the dimensionality of ``conv_op``."""
    if kind not in _NORMS:
        raise ValueError(f"Unknown norm kind {kind!r}; expected one of {sorted(_NORMS)}")
    return _NORMS[kind][spatial_dims(conv_op)]


def make_norm(norm_op: type[nn.Module] | None, channels: int, norm_op_kwargs: dict | None) -> nn.Module:
    """``norm_op(channels, **norm_op_kwargs)``, or an identity when ``norm_op`` is None."""
    if norm_op is None:
        return nn.Identity()
    return norm_op(channels, **(norm_op_kwargs or {}))


def make_nonlin(nonlin: type[nn.Module] | None, nonlin_kwargs: dict | None) -> nn.Module:
    """``nonlin(**nonlin_kwargs)``, or an identity when ``nonlin`` is None."""
    if nonlin is None:
        return nn.Identity()
    return nonlin(**(nonlin_kwargs or {}))


def round_up_to_multiple(size: Sequence[int], multiple: int) -> list[int]:
    """Each axis of ``size`` rounded up to a multiple of ``multiple`` (a network's total stride)."""
    return [math.ceil(s / multiple) * multiple for s in size]


def pad_to_size(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``x`` (B, C, *spatial) zero-padded at the end of each spatial axis to ``size`` (``x`` itself if equal)."""
    current = list(x.shape[2:])
    if current == list(size):
        return x
    return F.pad(x, [amount for s, p in zip(reversed(current), reversed(size)) for amount in (0, p - s)])


def crop_to_size(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The first ``size`` positions of each spatial axis of ``x`` (B, C, *spatial): undoes ``pad_to_size``."""
    return x[(..., *(slice(0, s) for s in size))]


def downsampled_size(size: Sequence[int], stride: int) -> list[int]:
    """The size of an output at ``stride`` for an input of ``size``: ⌈size / stride⌉ per axis."""
    return [math.ceil(s / stride) for s in size]


def deep_supervision_scales(patch_size: Sequence[int], strides: Sequence[int]) -> list[list[float]]:
    """Per-output scales relative to ``patch_size`` of outputs at ``strides`` (full resolution first), as nnU-Net's
    ``_get_deep_supervision_scales`` returns them.

    nnU-Net resizes the targets to ``round(size * scale)``; ⌈size / stride⌉ / size reproduces each output's size
    exactly (1 / stride whenever the axis is divisible by the stride).
    """
    return [[c / s for c, s in zip(downsampled_size(patch_size, stride), patch_size)] for stride in strides]
