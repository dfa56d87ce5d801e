"""Additive attention gate of Attention U-Net (Oktay et al., 2018)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ops import interpolation_mode, make_nonlin, make_norm


class AttentionGate(nn.Module):
    """Additive attention gate: re-weights a skip feature map by a coefficient computed from it and a gate signal.

    Follows Oktay et al., "Attention U-Net: Learning Where to Look for the Pancreas", MIDL 2018 (grid attention):

        θ = norm(conv_θ(skip))            k×k conv with optional stride, C_skip → C_inter (k = 1 in Oktay et al.)
        φ = norm(conv_φ(gate))            k×k conv, C_gate → C_inter, resized to θ's size when they differ
        ψ = sigmoid(norm(conv_ψ(act(θ + φ))))   1×1 conv C_inter → 1 (with bias)
        out = skip · resize(ψ, skip size)

    As in Oktay's implementation, φ is computed at the gate's own resolution and then resized (multi-linear,
    align_corners=False). Without a norm on the branches this equals resizing the gate first, because a 1×1
    convolution without bias commutes with linear interpolation, at a fraction of the cost.

    Configurations used in this package: SegFormer3D variant (no norm, GELU, no bias on θ/φ, stride 1),
    S2CA-Net (BatchNorm, ReLU, skip stride 2 with ψ upsampled back), REC-UNet (BatchNorm, ReLU, biases),
    RccSegmentor's group gated attention (BatchNorm, ReLU, biases, 3×3 θ/φ on gate and skip of the same size;
    with k > 1 resizing φ no longer equals resizing the gate, so such callers pass both at one size).

    Args:
        conv_op: ``nn.Conv2d`` or ``nn.Conv3d``; selects 2D or 3D.
        skip_channels: channels of the skip (gated) input.
        gate_channels: channels of the gate input.
        inter_channels: channels of θ and φ.
        skip_stride: stride of conv_θ on the skip; ψ is upsampled back to the skip's size.
        kernel_size: k, odd kernel size of conv_θ and conv_φ ("same" padding); conv_ψ is always 1×1.
        bias: bias of conv_θ and conv_φ (conv_ψ always has one).
        norm_op: normalisation class after conv_θ, conv_φ and conv_ψ (e.g. ``nn.BatchNorm3d``) or None.
        norm_op_kwargs: keyword arguments of ``norm_op``.
        nonlin: activation class applied to θ + φ.
        nonlin_kwargs: keyword arguments of ``nonlin``.

    Shapes:
        skip (B, skip_channels, *S), gate (B, gate_channels, *G) with any G → output (B, skip_channels, *S).
    """

    def __init__(self, conv_op: type[nn.Module], skip_channels: int, gate_channels: int, inter_channels: int,
                 skip_stride: int = 1, bias: bool = False, kernel_size: int = 1,
                 norm_op: type[nn.Module] | None = None, norm_op_kwargs: dict | None = None,
                 nonlin: type[nn.Module] = nn.GELU, nonlin_kwargs: dict | None = None) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.mode = interpolation_mode(conv_op)
        self.theta = conv_op(skip_channels, inter_channels, kernel_size, stride=skip_stride,
                             padding=kernel_size // 2, bias=bias)
        self.theta_norm = make_norm(norm_op, inter_channels, norm_op_kwargs)
        self.phi = conv_op(gate_channels, inter_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        self.phi_norm = make_norm(norm_op, inter_channels, norm_op_kwargs)
        self.nonlin = make_nonlin(nonlin, nonlin_kwargs)
        self.psi = conv_op(inter_channels, 1, 1, bias=True)
        self.psi_norm = make_norm(norm_op, 1, norm_op_kwargs)

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        theta = self.theta_norm(self.theta(skip))
        phi = self.phi_norm(self.phi(gate))
        if phi.shape[2:] != theta.shape[2:]:
            phi = F.interpolate(phi, size=theta.shape[2:], mode=self.mode, align_corners=False)
        psi = torch.sigmoid(self.psi_norm(self.psi(self.nonlin(theta + phi))))
        if psi.shape[2:] != skip.shape[2:]:
            psi = F.interpolate(psi, size=skip.shape[2:], mode=self.mode, align_corners=False)
        return skip * psi
