"""Depthwise convolution with a faster backward pass on CPU.

PyTorch's CPU backward of depthwise 3D convolutions is slow (measured with torch 2.14 on 2 cores, 128 channels
at 16×80×112: 0.95 s, against 0.07 s for the forward pass). Both gradients are convolutions that the forward
kernels compute faster:
  * the input gradient of a stride-1, size-preserving convolution is the same convolution with the kernel
    flipped in space;
  * the weight gradient is one grouped convolution of the padded input with the output gradient as kernel,
    one group per (sample, channel), strided by the dilation.
This takes the backward to 0.57 s there. Results equal PyTorch's own gradients up to float rounding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

_CONV_FUNCTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class _DepthwiseConvFunction(torch.autograd.Function):
    """Stride-1, size-preserving depthwise convolution whose backward uses forward convolutions."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                padding: tuple[int, ...], dilation: tuple[int, ...]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.dilation, ctx.has_bias = padding, dilation, bias is not None
        return _CONV_FUNCTIONS[x.ndim - 2](x, weight, bias, 1, padding, dilation, weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        conv = _CONV_FUNCTIONS[x.ndim - 2]
        channels, spatial = weight.shape[0], tuple(range(2, x.ndim))
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = conv(grad_out, weight.flip(spatial), None, 1, ctx.padding, ctx.dilation, channels)
        if ctx.needs_input_grad[1]:
            groups = x.shape[0] * channels
            padded = F.pad(x, [p for p in reversed(ctx.padding) for _ in range(2)])
            per_sample = conv(padded.reshape(1, groups, *padded.shape[2:]),
                              grad_out.reshape(groups, 1, *grad_out.shape[2:]), None, ctx.dilation, 0, 1, groups)
            grad_weight = per_sample.view(x.shape[0], channels, *weight.shape[2:]).sum(0).unsqueeze(1)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum(dim=(0, *spatial))
        return grad_x, grad_weight, grad_bias, None, None


def depthwise_conv(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply ``conv``, a depthwise ``nn.Conv{1,2,3}d`` (groups = in = out channels), to ``x``.

    On CPU, with gradients needed, a stride-1 size-preserving ``conv`` runs through a backward built from forward
    convolutions (see the module docstring); everywhere else this is ``conv(x)``.

    Shapes:
        input (B, C, *spatial) → output (B, C, *spatial) for the fast path; otherwise whatever ``conv`` returns.
    """
    fast_path = (
        x.device.type == "cpu" and torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad)
        and not torch.is_autocast_enabled("cpu") and x.dtype == conv.weight.dtype
        and conv.groups == conv.in_channels == conv.out_channels and all(s == 1 for s in conv.stride)
        and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
        and all(2 * p == d * (k - 1) for p, d, k in zip(conv.padding, conv.dilation, conv.kernel_size))
    )
    if not fast_path:
        return conv(x)
    return _DepthwiseConvFunction.apply(x, conv.weight, conv.bias, tuple(conv.padding), tuple(conv.dilation))
