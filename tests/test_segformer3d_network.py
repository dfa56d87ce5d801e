"""SegFormer3DVariant: shapes, deep supervision, gradients, state dicts, attention and MAC counting (CPU)."""
import math
import subprocess
import sys
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import assert_deep_supervision_follows_the_decoder, assert_state_dict_independent_of_deep_supervision

from nnunet_ext.architectures import SegFormer3DVariant, segformer3d_variant
from nnunet_ext.architectures.profiling import count_macs, count_parameters


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(Q Kᵀ / sqrt(d)) V with the score matrix written out, as the original repository computes it."""
    return ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(dim=-1) @ v


pytestmark = pytest.mark.usefixtures("single_thread_torch", "seeded_torch")


@pytest.fixture(scope="module")
def network() -> SegFormer3DVariant:
    torch.manual_seed(0)
    return SegFormer3DVariant(1, 3, deep_supervision=False)


def test_parameter_count_matches_the_original_configuration(network):
    # measured on the original repository: 4,769,488 = encoder 4,098,144 + decoder 671,344
    assert count_parameters(network) == 4_769_488
    assert count_parameters(network.encoder) == 4_098_144
    assert count_parameters(network.decoder) == 671_344


def test_channel_count_changes_only_the_stem():
    assert count_parameters(SegFormer3DVariant(4, 3)) - count_parameters(SegFormer3DVariant(1, 3)) == 3 * 16 * 27


@pytest.mark.parametrize("channels", [1, 4])
@pytest.mark.parametrize("size", [(17, 33, 45), (8, 12, 20), (5, 5, 5)])
def test_output_has_the_input_size(channels, size):
    net = SegFormer3DVariant(channels, 2).eval()
    with torch.no_grad():
        out = net(torch.randn(1, channels, *size))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, 2, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [(16, 32, 48), (17, 33, 45), (5, 5, 5)])
def test_deep_supervision_list_main_full_size_aux_at_stride_4(size):
    net = SegFormer3DVariant(1, 3, deep_supervision=True)
    main, aux = net(torch.randn(2, 1, *size))
    assert main.shape == (2, 3, *size)
    assert aux.shape == (2, 3, *(math.ceil(s / 4) for s in size))


@pytest.mark.parametrize("patch", [(16, 32, 48), (32, 160, 208), (30, 17, 5), (13, 27, 41)])
def test_deep_supervision_scales_give_nnunet_target_sizes_equal_to_the_outputs(patch):
    scales = SegFormer3DVariant.deep_supervision_scales(patch)
    assert len(scales) == 2 and scales[0] == [1.0, 1.0, 1.0]
    # nnU-Net's DownsampleSegForDSTransform resizes targets to round(size * scale)
    assert [round(s * f) for s, f in zip(patch, scales[1])] == [math.ceil(s / 4) for s in patch]
    if all(s % 4 == 0 for s in patch):
        assert scales[1] == [0.25, 0.25, 0.25]


def test_deep_supervision_is_read_from_the_decoder_at_call_time():
    net = SegFormer3DVariant(1, 3, deep_supervision=False).eval()
    assert_deep_supervision_follows_the_decoder(net, torch.randn(1, 1, 16, 16, 16), num_outputs=2)


def test_every_parameter_gets_a_gradient_in_a_deep_supervision_step():
    net = SegFormer3DVariant(2, 3, deep_supervision=True).train()
    main, aux = net(torch.randn(2, 2, 16, 16, 24))
    (main.square().mean() + aux.square().mean()).backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert net.decoder.aux_head.weight.grad.abs().sum() > 0


def test_state_dict_is_independent_of_deep_supervision():
    assert_state_dict_independent_of_deep_supervision(
        lambda deep_supervision: SegFormer3DVariant(1, 3, deep_supervision=deep_supervision),
        torch.randn(1, 1, 12, 20, 28))


def test_small_axes_are_padded_and_cropped_only_when_needed(network):
    assert SegFormer3DVariant.minimum_axis_size() == 7
    assert SegFormer3DVariant.minimum_axis_size((2, 2, 1, 1)) == 5
    assert SegFormer3DVariant.padded_input_size([17, 33, 45]) == [17, 33, 45]
    assert SegFormer3DVariant.padded_input_size([8, 12, 20]) == [8, 12, 20]
    assert SegFormer3DVariant.padded_input_size([5, 5, 5]) == [7, 7, 17]  # two positions at stride 16 for the norms
    assert SegFormer3DVariant.padded_input_size([6, 40, 3]) == [7, 40, 7]
    with torch.no_grad():
        network.eval()
        x = torch.randn(1, 1, 5, 6, 6)
        padded = F.pad(x, (0, 11, 0, 1, 0, 2))  # explicit zero padding to 7x7x17
        torch.testing.assert_close(network(x), network(padded)[..., :5, :6, :6], atol=1e-5, rtol=1e-5)


def test_sdpa_attention_equals_the_explicit_attention_of_the_original(network):
    network.eval()
    x = torch.randn(2, 1, 14, 24, 30)
    with torch.no_grad():
        fused = network(x)
        with mock.patch.object(segformer3d_variant, "scaled_dot_product_attention", explicit_attention):
            explicit = network(x)
    torch.testing.assert_close(fused, explicit, atol=1e-4, rtol=1e-4)


class _Attention(nn.Module):
    def __init__(self, fused: bool) -> None:
        super().__init__()
        self.fused = fused

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        k, v = q[:, :, :20], q[:, :, :20, :8]
        if self.fused:
            return F.scaled_dot_product_attention(q, k, v)
        return explicit_attention(q, k, v)


def test_count_macs_counts_scaled_dot_product_attention():
    shape = (2, 3, 50, 16)  # batch, heads, queries, width; 20 keys, values of width 8
    fused, explicit = count_macs(_Attention(True), shape), count_macs(_Attention(False), shape)
    assert explicit == 2 * 3 * 50 * 20 * (16 + 8)
    assert fused == explicit


def test_count_macs_of_the_network_includes_attention_and_restores_mode(network):
    network.train()
    shape = (1, 1, 16, 32, 32)
    fused = count_macs(network, shape)
    with mock.patch.object(segformer3d_variant, "scaled_dot_product_attention", explicit_attention):
        explicit = count_macs(network, shape)
    assert network.training
    assert fused == explicit
    # stage-1 attention alone (2 blocks, 8x16x16 queries, 2x4x4 keys, width 32) is part of the total
    stage1_attention = 2 * (8 * 16 * 16) * (2 * 4 * 4) * (32 + 32)
    with mock.patch.object(segformer3d_variant, "scaled_dot_product_attention",
                           lambda q, k, v: torch.zeros_like(q)):
        without_attention = count_macs(network, shape)
    assert fused - without_attention >= stage1_attention


def test_architectures_import_without_nnunet_or_timm(tmp_path):
    code = ("import sys, nnunet_ext.architectures as a; "
            "assert a.SegFormer3DVariant; "
            "bad = [m for m in ('nnunetv2', 'timm') if m in sys.modules]; "
            "assert not bad, bad")
    # run outside the source tree, whose nnunet_ext/ folder would shadow the installed package
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
