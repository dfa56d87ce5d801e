"""Deformable convolution (blocks.deformable_conv) against ordinary convolutions and an independent slow reference."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnunet_ext.architectures.blocks import (AttentiveDeformableConv, ChannelGate, DeformableConv, SpatialAttentionMap,
                                             deformable_sample, kernel_taps)

pytestmark = pytest.mark.usefixtures("single_thread_torch", "seeded_torch")


def zeros_rule_sample(x: torch.Tensor, position: list[float]) -> torch.Tensor:
    """Multi-linear sample of x (C, D, H, W) at ``position`` (3 voxel coordinates), zero outside the volume."""
    sample = torch.zeros(x.shape[0], dtype=x.dtype)
    lower = [math.floor(p) for p in position]
    for corner in itertools.product((0, 1), repeat=3):
        index = [lo + c for lo, c in zip(lower, corner)]
        if any(i < 0 or i >= s for i, s in zip(index, x.shape[1:])):
            continue  # zero outside the volume
        factor = 1.0
        for p, i in zip(position, index):
            factor *= 1.0 - abs(p - i)
        sample = sample + factor * x[:, index[0], index[1], index[2]]
    return sample


def original_rule_sample(x: torch.Tensor, position: list[float]) -> torch.Tensor:
    """The original S2CA-Net code's sampling (modules/DeformableBlock3D.py) at one position, written out as it
    describes it: positions move into the 1-voxel zero-padded volume; per axis the lower neighbour floor(p) and the
    upper floor(p) + 1 are clamped to the padded volume; a position in its margin (p < 1 or p > padded size - 2) is
    replaced by its floor, then every position is clamped to the padded volume; lower neighbours weigh 1 + (q - p),
    upper ones 1 - (q - p), multiplied over the axes."""
    padded = F.pad(x, (1,) * 6)
    sizes = padded.shape[1:]
    shifted = [p + 1 for p in position]
    lower = [math.floor(p) for p in shifted]
    snapped = [float(math.floor(p)) if p < 1 or p > s - 2 else p for p, s in zip(shifted, sizes)]
    snapped = [min(max(p, 0.0), s - 1.0) for p, s in zip(snapped, sizes)]
    sample = torch.zeros(x.shape[0], dtype=x.dtype)
    for corner in itertools.product((0, 1), repeat=3):
        index = [min(max(lo + c, 0), s - 1) for lo, c, s in zip(lower, corner, sizes)]
        factor = 1.0
        for i, p, upper in zip(index, snapped, corner):
            factor *= 1.0 - (i - p) if upper else 1.0 + (i - p)
        sample = sample + factor * padded[:, index[0], index[1], index[2]]
    return sample


def slow_deformable_conv(x: torch.Tensor, offsets: torch.Tensor, weight: torch.Tensor,
                         sample_at=zeros_rule_sample) -> torch.Tensor:
    """Deformable convolution written out per output position and tap (3D, kernel k), sampling with ``sample_at``.

    offsets: (B, 3·K, D, H, W), channel a·K + n = displacement along axis a of tap n (taps in weight order);
    weight: (C_out, C_in, k, k, k).
    """
    batch, channels, *size = x.shape
    k = weight.shape[-1]
    half = k // 2
    out = torch.zeros(batch, weight.shape[0], *size, dtype=x.dtype)
    num_taps = k ** 3
    for b, d, h, w in itertools.product(range(batch), *(range(s) for s in size)):
        for n, (kd, kh, kw) in enumerate(itertools.product(range(k), repeat=3)):
            position = [d + kd - half + offsets[b, n, d, h, w].item(),
                        h + kh - half + offsets[b, num_taps + n, d, h, w].item(),
                        w + kw - half + offsets[b, 2 * num_taps + n, d, h, w].item()]
            out[b, :, d, h, w] += weight[:, :, kd, kh, kw] @ sample_at(x[b], position)
    return out


def test_kernel_taps_follow_the_weight_layout():
    taps = kernel_taps(3, 3)
    assert taps.shape == (27, 3)
    assert taps[0].tolist() == [-1, -1, -1] and taps[13].tolist() == [0, 0, 0] and taps[5].tolist() == [-1, 0, 1]
    assert kernel_taps(3, 2, dilation=2)[0].tolist() == [-2, -2]


@pytest.mark.parametrize("border", ["zeros", "floor"])
@pytest.mark.parametrize("size", [(5, 6, 7), (1, 4, 3)])
def test_zero_offsets_equal_conv3d_with_the_equivalent_weight(size, border):
    deformable = DeformableConv(nn.Conv3d, 3, 5, kernel_size=3, bias=True, border=border)
    x = torch.randn(2, 3, *size)
    out = deformable(x, torch.zeros(2, 81, *size))
    expected = F.conv3d(x, deformable.weight_as_conv(), deformable.projection.bias, padding=1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_zero_offsets_equal_conv2d_with_dilation():
    deformable = DeformableConv(nn.Conv2d, 2, 4, kernel_size=3, dilation=2)
    x = torch.randn(2, 2, 9, 11)
    out = deformable(x, torch.zeros(2, 18, 9, 11))
    torch.testing.assert_close(out, F.conv2d(x, deformable.weight_as_conv(), padding=2, dilation=2),
                               atol=1e-5, rtol=1e-5)


def test_integer_offsets_move_the_sampling_point():
    # every tap displaced by +1 along the last axis samples the input shifted left by one, zero-filled (except in
    # the first column, whose left taps reach the input's first column instead of the zero border)
    x = torch.randn(1, 2, 4, 5, 6)
    offsets = torch.zeros(1, 81, 4, 5, 6)
    offsets[:, 54:] = 1.0
    samples = deformable_sample(x, offsets, 3)
    shifted = F.pad(x[..., 1:], (0, 1))
    expected = deformable_sample(shifted, torch.zeros_like(offsets), 3)
    torch.testing.assert_close(samples[..., 1:], expected[..., 1:], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(samples[..., 0], expected[..., 0])


def test_random_offsets_match_the_slow_reference():
    deformable = DeformableConv(nn.Conv3d, 2, 3, kernel_size=3).double()
    x = torch.randn(2, 2, 3, 4, 5, dtype=torch.float64)
    offsets = 1.5 * torch.randn(2, 81, 3, 4, 5, dtype=torch.float64)  # many samples land outside the volume
    out = deformable(x, offsets)
    torch.testing.assert_close(out, slow_deformable_conv(x, offsets, deformable.weight_as_conv().detach()),
                               atol=1e-10, rtol=1e-10)


def test_floor_border_matches_the_original_codes_rule():
    deformable = DeformableConv(nn.Conv3d, 2, 3, kernel_size=3, border="floor").double()
    x = torch.randn(2, 2, 3, 4, 5, dtype=torch.float64)
    offsets = 1.5 * torch.randn(2, 81, 3, 4, 5, dtype=torch.float64)
    # a third of the offsets whole or half voxels: positions exactly on the border, on -1, on the size, halfway
    exact = torch.rand(offsets.shape) < 0.33
    offsets[exact] = torch.round(2 * offsets[exact]) / 2
    out = deformable(x, offsets)
    weight = deformable.weight_as_conv().detach()
    torch.testing.assert_close(out, slow_deformable_conv(x, offsets, weight, original_rule_sample),
                               atol=1e-10, rtol=1e-10)
    # the rules differ only within a voxel outside the volume
    assert not torch.allclose(out, slow_deformable_conv(x, offsets, weight))


def test_unknown_border_rule_is_refused():
    with pytest.raises(ValueError, match=r"border must be one of \('zeros', 'floor'\), got 'reflect'"):
        DeformableConv(nn.Conv3d, 2, 3, border="reflect")


def test_gradients_reach_input_weights_and_offsets():
    deformable = DeformableConv(nn.Conv3d, 2, 2, kernel_size=3).double()
    x = torch.randn(1, 2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    offsets = (0.3 + 0.4 * torch.rand(1, 81, 3, 3, 4, dtype=torch.float64)).requires_grad_()  # away from kinks
    weight = deformable.projection.weight

    def run(inp, off, w):
        return F.conv3d(deformable_sample(inp, off, 3), w)

    assert torch.autograd.gradcheck(run, (x, offsets, weight), eps=1e-6, atol=1e-6)
    run(x, offsets, weight).sum().backward()
    for tensor in (x, offsets, weight):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0


def test_offset_shape_is_checked():
    with pytest.raises(ValueError, match="offsets must have shape"):
        deformable_sample(torch.randn(1, 2, 4, 4, 4), torch.zeros(1, 27, 4, 4, 4), 3)


def test_attentive_deformable_conv_of_s2canet():
    block = AttentiveDeformableConv(nn.Conv3d, 96, 96, kernel_size=3, reduction=12)
    assert block.reduce.out_channels == 8  # the original's 8 sampled channels
    assert block.offset.out_channels == 81 and block.offset_attention.conv.kernel_size == (7, 7, 7)
    x = torch.randn(1, 96, 6, 7, 8)
    out = block(x)
    assert out.shape == (1, 96, 6, 7, 8)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())
    # with a zero offset convolution the block is a 3x3x3 convolution of the reduced channels
    with torch.no_grad():
        block.offset.weight.zero_()
        z = block.reduce(x)
        torch.testing.assert_close(block(x), F.conv3d(z, block.deform.weight_as_conv(), padding=1),
                                   atol=1e-5, rtol=1e-5)


def test_channel_gate_and_spatial_attention_map():
    gate = ChannelGate(32, 16, pools=("avg", "max"), bias=False)  # S2CA-Net's CBAM
    assert sum(p.numel() for p in gate.parameters()) == 2 * 32 * 2
    x = torch.randn(2, 32, 5, 6)
    weights = torch.sigmoid(gate.mlp(x.mean((2, 3))) + gate.mlp(x.amax((2, 3))))
    torch.testing.assert_close(gate(x), x * weights[..., None, None])
    attention = SpatialAttentionMap(nn.Conv3d, 3)
    y = torch.randn(2, 4, 3, 4, 5)
    expected = torch.sigmoid(attention.conv(torch.cat((y.amax(1, keepdim=True), y.mean(1, keepdim=True)), 1)))
    torch.testing.assert_close(attention(y), expected)
