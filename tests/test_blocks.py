"""Shared blocks of nnunet_ext.architectures.blocks, in 2D and 3D (CPU, tiny sizes)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnunet_ext.architectures.blocks import (ASPP, SCSE, AttentionGate, DepthwiseSeparableConv, InstanceNorm,
                                             depthwise_conv, interpolation_mode, matching_norm, spatial_dims)
from nnunet_ext.architectures.blocks import depthwise as depthwise_module

CONV_OPS = {2: nn.Conv2d, 3: nn.Conv3d}


def _input(dims: int, channels: int, size: int = 9, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, channels, *([size] * dims))


pytestmark = pytest.mark.usefixtures("single_thread_torch", "seeded_torch")


def test_ops_map_conv_to_dimension_specific_ops():
    assert spatial_dims(nn.Conv2d) == 2 and spatial_dims(nn.Conv3d) == 3
    assert interpolation_mode(nn.Conv2d) == "bilinear" and interpolation_mode(nn.Conv3d) == "trilinear"
    assert matching_norm(nn.Conv3d, "batch") is nn.BatchNorm3d
    assert matching_norm(nn.Conv2d, "instance") is nn.InstanceNorm2d
    with pytest.raises(ValueError):
        spatial_dims(nn.Linear)
    with pytest.raises(ValueError):
        matching_norm(nn.Conv3d, "layer")


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("affine", [False, True])
def test_instance_norm_equals_torch_instance_norm_and_keeps_channels_last(dims, affine):
    x = _input(dims, 6, size=7)
    ours = InstanceNorm(6, affine=affine)
    reference = matching_norm(CONV_OPS[dims], "instance")(6, affine=affine)
    if affine:
        with torch.no_grad():
            ours.weight.uniform_(0.5, 2)
            ours.bias.uniform_(-1, 1)
        reference.load_state_dict(ours.state_dict())
    assert set(ours.state_dict()) == set(reference.state_dict())
    torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=1e-5)
    if dims == 3:
        channels_last = x.contiguous(memory_format=torch.channels_last_3d)
        out = ours(channels_last)
        assert out.is_contiguous(memory_format=torch.channels_last_3d) and not out.is_contiguous()
        torch.testing.assert_close(out, reference(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_depthwise_separable_conv_shapes_and_factorisation(dims):
    block = DepthwiseSeparableConv(CONV_OPS[dims], 6, 10, kernel_size=3, dilation=2,
                                   norm_op=matching_norm(CONV_OPS[dims], "batch"), nonlin=nn.GELU)
    x = _input(dims, 6, size=9)
    assert block(x).shape == (2, 10, *([9] * dims))  # "same" padding with dilation
    # depthwise k^d per input channel + pointwise in*out, no biases, BatchNorm 2*out
    assert sum(p.numel() for p in block.parameters()) == 6 * 3 ** dims + 6 * 10 + 2 * 10
    strided = DepthwiseSeparableConv(CONV_OPS[dims], 6, 4, stride=2)
    assert strided(x).shape == (2, 4, *([5] * dims))  # ceil(9 / 2)


def test_depthwise_separable_conv_keeps_channels_apart_in_the_depthwise_step():
    block = DepthwiseSeparableConv(nn.Conv3d, 4, 4)
    x = _input(3, 4, size=5).requires_grad_()
    block.depthwise(x)[:, 0].sum().backward()
    assert x.grad[:, 0].abs().sum() > 0
    assert x.grad[:, 1:].abs().sum() == 0


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("bias", [False, True])
def test_depthwise_conv_gradients_equal_pytorch(dims, dilation, bias):
    conv = CONV_OPS[dims](5, 5, 3, padding=dilation, dilation=dilation, groups=5, bias=bias)
    x = _input(dims, 5, size=8, batch=3)
    if dims == 3:
        x = x.contiguous(memory_format=torch.channels_last_3d)  # the layout the networks feed it
    grad_out = torch.randn(3, 5, *([8] * dims))
    results = []
    for apply in (lambda inp: depthwise_conv(conv, inp), conv):
        inp = x.clone().requires_grad_()
        conv.zero_grad()
        out = apply(inp)
        out.backward(grad_out)
        results.append((out, inp.grad, conv.weight.grad.clone(), conv.bias.grad.clone() if bias else None))
    (out, grad_x, grad_w, grad_b), (ref_out, ref_x, ref_w, ref_b) = results
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(grad_x, ref_x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad_w, ref_w, atol=1e-4, rtol=1e-5)
    if bias:
        torch.testing.assert_close(grad_b, ref_b, atol=1e-4, rtol=1e-5)


def test_depthwise_conv_uses_the_custom_backward_only_where_it_is_valid(monkeypatch):
    calls = []
    original = depthwise_module._DepthwiseConvFunction.apply
    monkeypatch.setattr(depthwise_module._DepthwiseConvFunction, "apply",
                        lambda *args: calls.append(1) or original(*args))
    x = _input(3, 4, size=6).requires_grad_()
    depthwise_conv(nn.Conv3d(4, 4, 3, padding=1, groups=4), x)
    assert len(calls) == 1
    depthwise_conv(nn.Conv3d(4, 4, 3, padding=1, stride=2, groups=4), x)  # strided: PyTorch's own backward
    depthwise_conv(nn.Conv3d(4, 4, 3, padding=0, groups=4), x)  # not size-preserving
    depthwise_conv(nn.Conv3d(4, 8, 3, padding=1, groups=4), x)  # not depthwise
    with torch.no_grad():
        depthwise_conv(nn.Conv3d(4, 4, 3, padding=1, groups=4), x)  # nothing to differentiate
    assert len(calls) == 1


def test_depthwise_separable_conv_rejects_even_kernels():
    with pytest.raises(ValueError):
        DepthwiseSeparableConv(nn.Conv3d, 4, 4, kernel_size=2)


@pytest.mark.parametrize("dims", [2, 3])
def test_scse_is_sum_of_channel_and_spatial_excitation(dims):
    block = SCSE(CONV_OPS[dims], 32, reduction=8, min_channels=8, nonlin=nn.GELU)
    assert block.channel_squeeze.out_channels == 8  # max(32 // 8, 8)
    x = _input(dims, 32, size=6)
    pooled = x.mean(dim=tuple(range(2, x.ndim)))  # (B, C)
    hidden = F.gelu(pooled @ block.channel_squeeze.weight.flatten(1).T + block.channel_squeeze.bias)
    channel_weight = torch.sigmoid(hidden @ block.channel_excite.weight.flatten(1).T + block.channel_excite.bias)
    spatial_logit = torch.einsum("bc...,c->b...", x, block.spatial_squeeze.weight.flatten()) \
        + block.spatial_squeeze.bias
    expand = (...,) + (None,) * dims
    expected = x * channel_weight[expand] + x * torch.sigmoid(spatial_logit)[:, None]
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


def test_scse_bottleneck_width_follows_reduction():
    assert SCSE(nn.Conv3d, 160).channel_squeeze.out_channels == 20
    assert SCSE(nn.Conv3d, 64, reduction=4, min_channels=2).channel_squeeze.out_channels == 16
    assert isinstance(SCSE(nn.Conv2d, 16, nonlin=nn.ReLU).channel_nonlin, nn.ReLU)


@pytest.mark.parametrize("dims", [2, 3])
def test_attention_gate_equals_gating_with_the_resized_gate(dims):
    """Without norms, resizing φ(gate) equals the variant's formulation that resizes the gate first."""
    conv = CONV_OPS[dims]
    gate_module = AttentionGate(conv, skip_channels=6, gate_channels=10, inter_channels=4, nonlin=nn.GELU)
    skip, gate = _input(dims, 6, size=9), _input(dims, 10, size=5)
    mode = interpolation_mode(conv)
    resized_gate = F.interpolate(gate, size=skip.shape[2:], mode=mode, align_corners=False)
    theta = gate_module.theta(skip)
    phi = gate_module.phi(resized_gate)
    psi = torch.sigmoid(gate_module.psi(F.gelu(theta + phi)))
    out = gate_module(skip, gate)
    assert out.shape == skip.shape
    torch.testing.assert_close(out, skip * psi, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_attention_gate_with_skip_stride_and_batch_norm(dims):
    """The S2CA-Net configuration: strided θ on the skip, BatchNorm on all branches, ReLU, ψ upsampled back."""
    conv = CONV_OPS[dims]
    gate_module = AttentionGate(conv, skip_channels=8, gate_channels=16, inter_channels=8, skip_stride=2, bias=True,
                                norm_op=matching_norm(conv, "batch"), nonlin=nn.ReLU, nonlin_kwargs={"inplace": True})
    assert isinstance(gate_module.theta_norm, matching_norm(conv, "batch"))
    assert gate_module.theta.stride == (2,) * dims and gate_module.theta.bias is not None
    skip, gate = _input(dims, 8, size=8), _input(dims, 16, size=4)
    out = gate_module(skip, gate)
    assert out.shape == skip.shape
    ratio = out / skip
    assert torch.all((ratio > 0) & (ratio < 1))  # the coefficient is a sigmoid
    assert ratio.std() > 0  # and it varies over space
    out.sum().backward()
    assert all(p.grad is not None for p in gate_module.parameters())


@pytest.mark.parametrize("dims", [2, 3])
def test_aspp_shapes_branches_and_pooling(dims):
    conv = CONV_OPS[dims]
    aspp = ASPP(conv, 12, 8, rates=(1, 2, 3), norm_op=InstanceNorm, nonlin=nn.GELU)
    assert [branch[0].depthwise.dilation for branch in aspp.atrous_branches] == [(r,) * dims for r in (1, 2, 3)]
    assert aspp.projection.in_channels == 5 * 8
    x = _input(dims, 12, size=7)
    out = aspp(x)
    assert out.shape == (2, 8, *([7] * dims))
    # the image-pooling branch carries global context: changing far-away input changes every output position
    far = x.clone()
    far[(slice(None), slice(None)) + (slice(-2, None),) * dims] += 5
    assert torch.all((aspp(far) - out)[(slice(None), slice(None)) + (slice(0, 1),) * dims].abs() > 0)


def test_aspp_parameter_count_of_the_segformer3d_variant():
    # 1x1 256*128; per rate: depthwise 27*256 + pointwise 256*256 + 1x1 256*128; pooling 256*128; projection 640*128
    aspp = ASPP(nn.Conv3d, 256, 128, rates=(1, 2, 3), norm_op=InstanceNorm, nonlin=nn.GELU)
    expected = 256 * 128 + 3 * (27 * 256 + 256 * 256 + 256 * 128) + 256 * 128 + 640 * 128
    assert sum(p.numel() for p in aspp.parameters()) == expected == 463_104
