"""The originals' weights load into ours: each network's ``convert_original_state_dict`` on the original's full
list of parameter and buffer names and shapes.

The lists are data (``tests/data/original_state_dicts/<network>.json``, names and shapes only), recorded from the
original code outside this repository; no original code runs here. That the converted weights give the original's
outputs was measured against the original code (README, "Fidelity"); these tests check every original key is
mapped or deliberately dropped, every shape is ours, the converted weights load strictly apart from our documented
additions, and the layout changes against references written here.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnunet_ext.architectures import RccSegmentor, RECUNet, S2CANet, SegFormer3DVariant, rccsegmentor, recunet
from nnunet_ext.architectures import s2canet, segformer3d_variant

DATA = Path(__file__).parent / "data" / "original_state_dicts"

pytestmark = pytest.mark.usefixtures("single_thread_torch", "seeded_torch")


@dataclass(frozen=True)
class Original:
    """One original implementation: our network built as the original, and what its converter promises."""

    build: Callable[[], nn.Module]  # ours with the original's input channels and classes
    convert: Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]
    our_additions: frozenset[str] = frozenset()  # our keys the original lacks (listed in the docstring)
    dropped: frozenset[str] = frozenset()  # original keys the converter drops on purpose (listed in the docstring)
    filled: frozenset[str] = frozenset()  # our additions the converter fills with the original's function
    build_on_meta: bool = False  # build ours on the meta device (large networks: fast, no memory)


# the original S2CA-Net's never-used parameters: PReLU slopes of ConvNorms built with activation=False (every
# shortcut, every attention-gate branch) and the shortcut convolutions of the two blocks that keep their shape
S2CANET_UNUSED = frozenset(
    [f"{block}.identity_mapping.act.weight" for block in
     [f"backbone.conv{level}_0" for level in range(4)] + [f"conv{level}_1" for level in range(4)]
     + ["conv_bottom.0", "conv_bottom.1"]]
    + [f"gate{gate}.{branch}.act.weight" for gate in ("3_2", "2_1", "1_0") for branch in ("W_g", "W_x", "psi.0")]
    + ["conv3_1.identity_mapping.conv.weight", "conv_bottom.1.identity_mapping.conv.weight"])
S2CANET_PSI_BIASES = frozenset(f"decoder.gates.{i}.psi.bias" for i in range(3))

ORIGINALS = {
    "rccsegmentor": Original(lambda: RccSegmentor(3, 1), rccsegmentor.convert_original_state_dict,
                             our_additions=frozenset(f"decoder.aux_heads.{i}.{p}" for i in (0, 1)
                                                     for p in ("weight", "bias")),
                             build_on_meta=True),
    "recunet": Original(lambda: RECUNet(1, 2), recunet.convert_original_state_dict, build_on_meta=True),
    "segformer3d": Original(lambda: SegFormer3DVariant(1, 3), segformer3d_variant.convert_original_state_dict),
    "s2canet": Original(lambda: S2CANet(4, 4), s2canet.convert_original_state_dict, dropped=S2CANET_UNUSED,
                        filled=S2CANET_PSI_BIASES, build_on_meta=True),
}


def original_state_dict(network: str) -> dict[str, torch.Tensor]:
    """Random tensors with exactly the names and shapes of the original's state dict (integer counters as 0)."""
    with open(DATA / f"{network}.json") as f:
        shapes = json.load(f)["tensors"]
    return {name: torch.zeros(shape, dtype=torch.long) if name.endswith("num_batches_tracked")
            else torch.randn(shape) for name, shape in shapes.items()}


def build(original: Original) -> nn.Module:
    if original.build_on_meta:
        with torch.device("meta"):
            return original.build()
    return original.build()


@pytest.mark.parametrize("network", sorted(ORIGINALS))
def test_every_original_key_maps_onto_ours_with_our_shape(network):
    original = ORIGINALS[network]
    state_dict = original_state_dict(network)
    assert original.dropped <= set(state_dict), "a documented dropped key is not in the original's list"
    converted = original.convert(state_dict)
    # every key but the dropped ones gives one of ours; the dropped ones give nothing
    assert len(converted) == len(state_dict) - len(original.dropped) + len(original.filled)
    assert original.filled <= set(converted)
    kept = {k: v for k, v in state_dict.items() if k not in original.dropped}
    assert set(original.convert(kept)) == set(converted)
    ours = build(original).state_dict()
    assert sorted(set(converted) - set(ours)) == []
    assert set(ours) - set(converted) == original.our_additions
    assert {k: tuple(v.shape) for k, v in converted.items() if v.shape != ours[k].shape} == {}


@pytest.mark.parametrize("network", sorted(ORIGINALS))
def test_converted_weights_load_strictly_apart_from_our_additions(network):
    original = ORIGINALS[network]
    state_dict = original_state_dict(network)
    converted = original.convert(state_dict)
    net = build(original)
    result = net.load_state_dict(converted, strict=False, assign=original.build_on_meta)
    assert result.unexpected_keys == []
    assert set(result.missing_keys) == original.our_additions
    if not original.build_on_meta:
        loaded = net.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in converted.items())


@pytest.mark.parametrize("network", sorted(ORIGINALS))
def test_a_key_without_counterpart_is_an_error_naming_it(network):
    state_dict = original_state_dict(network)
    state_dict["extra_head.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="extra_head.weight"):
        ORIGINALS[network].convert(state_dict)


def test_segformer3d_fuse_weight_reads_our_level_order():
    """The original fuses cat(P4, P3, P2, P1); ours cat(P1, P2, P3, P4): same result once converted."""
    channels, levels = 6, 4
    pyramid = [torch.randn(1, channels, 3, 4, 5) for _ in range(levels)]  # P1..P4, resized to one size
    weight = torch.randn(channels, levels * channels, 1, 1, 1)
    state_dict = original_state_dict("segformer3d")
    state_dict["decoder.fuse.0.weight"] = weight
    converted = segformer3d_variant.convert_original_state_dict(state_dict)["decoder.fuse.0.weight"]
    original_fused = F.conv3d(torch.cat(pyramid[::-1], dim=1), weight)
    torch.testing.assert_close(F.conv3d(torch.cat(pyramid, dim=1), converted), original_fused)


def test_rccsegmentor_channel_attention_convolutions_become_linear_layers():
    """L-CAM's 1×1 convolutions on the pooled (B, C, 1, 1) descriptors equal our ChannelGate's linear layers."""
    state_dict = original_state_dict("rccsegmentor")
    converted = rccsegmentor.convert_original_state_dict(state_dict)
    descriptor = torch.randn(2, 64, 1, 1)
    for original_key, ours_key in (("fe_module.l_cam.conv1.weight", "fem.channel_attention.mlp.0.weight"),
                                   ("fe_module.l_cam.conv2.weight", "fem.channel_attention.mlp.2.weight")):
        weight = state_dict[original_key]
        x = descriptor[:, :weight.shape[1]]
        torch.testing.assert_close(F.linear(x.flatten(1), converted[ours_key]), F.conv2d(x, weight).flatten(1))


def test_recunet_triplet_gates_land_on_the_branch_that_pools_the_same_axis():
    """The original's three gates have one shape; its ChannelGateH pools over H (x.permute(0, 2, 1, 3)),
    ChannelGateW over W (x.permute(0, 3, 2, 1)), SpatialGate over C. The converted weights must sit in the
    branch of ours that pools that axis, whatever the registration order."""
    state_dict = original_state_dict("recunet")
    converted = recunet.convert_original_state_dict(state_dict)
    net = RECUNet(1, 2, features_per_stage=(4, 8, 8, 16, 16))
    attention = net.encoder[0].attention
    pooled_sizes = {}
    for branch, gate in enumerate(attention.gates):
        gate.register_forward_pre_hook(
            lambda module, args, branch=branch: pooled_sizes.update({branch: args[0].shape[1]}))
    channels, height, width = 4, 6, 10
    attention(torch.randn(1, channels, height, width))
    pooled_axis = {channels: "SpatialGate", height: "ChannelGateH", width: "ChannelGateW"}
    for branch, size in pooled_sizes.items():
        original_key = f"Conv1.conv2.3.{pooled_axis[size]}.spatial.conv.weight"
        assert converted[f"encoder.0.attention.gates.{branch}.conv.weight"] is state_dict[original_key]


def test_s2canet_drops_exactly_the_originals_32787_unused_parameters():
    with open(DATA / "s2canet.json") as f:
        shapes = json.load(f)["tensors"]
    assert sum(torch.Size(shapes[key]).numel() for key in S2CANET_UNUSED) == 32_787


def test_s2canet_layer_scales_reshaped_and_psi_biases_zero():
    state_dict = original_state_dict("s2canet")
    converted = s2canet.convert_original_state_dict(state_dict)
    original_scale = state_dict["backbone.former2_0.poolformer.network.0.3.layer_scale_2"]
    ours_scale = converted["encoder.formers.0.former.blocks.3.layer_scale2"]
    x = torch.randn(2, original_scale.shape[0], 3, 4)
    # the original scales with layer_scale.unsqueeze(-1).unsqueeze(-1)
    torch.testing.assert_close(ours_scale * x, original_scale.unsqueeze(-1).unsqueeze(-1) * x)
    assert all(converted[key].shape == (1,) and not converted[key].any() for key in S2CANET_PSI_BIASES)


def original_axial_shift(weights: Mapping[str, torch.Tensor], x: torch.Tensor, groups: int = 5) -> torch.Tensor:
    """The original AxialShift's forward with its own parameter names: conv1 → GN → GELU; shifts of the zero-padded
    channel groups (torch.roll by -2..2) along W (dim 3) then H ("left diagonal"), along H then W reversed ("right
    diagonal"); conv2_1 on the two W-first ones, conv2_2 on the two H-first ones, each GELU; sum → GN → conv3."""
    def conv(name: str, t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, weights[f"{name}.weight"], weights[f"{name}.bias"])

    def norm(name: str, t: torch.Tensor) -> torch.Tensor:
        return F.group_norm(t, 1, weights[f"{name}.weight"], weights[f"{name}.bias"])

    def shift(t: torch.Tensor, dim: int, sign: int = 1) -> torch.Tensor:
        pad = groups // 2
        chunks = F.pad(t, (pad,) * 4).chunk(groups, 1)
        rolled = torch.cat([torch.roll(c, sign * s, dim) for c, s in zip(chunks, range(-pad, pad + 1))], 1)
        return rolled[:, :, pad:pad + t.shape[2], pad:pad + t.shape[3]]

    x = F.gelu(norm("norm1", conv("conv1", x)))
    along_w, along_h = shift(x, 3), shift(x, 2)
    branches = (("conv2_1", along_w), ("conv2_1", shift(along_w, 2)), ("conv2_2", along_h),
                ("conv2_2", shift(along_h, 3, -1)))
    return conv("conv3", norm("norm2", sum(F.gelu(conv(name, t)) for name, t in branches)))


def test_s2canet_axial_shift_convolutions_land_on_the_branches_they_serve():
    """conv2_1 and conv2_2 have one shape; the converted weights must serve the same shifted copies as there."""
    state_dict = original_state_dict("s2canet")
    prefix = "BottomAspmlp_l4.aspmlp.layers.0.blocks.2.axial_shift."
    weights = {key.removeprefix(prefix): value for key, value in state_dict.items() if key.startswith(prefix)}
    converted = s2canet.convert_original_state_dict(state_dict)
    mixer = s2canet.AxialShift(128, 5)
    mixer.load_state_dict({key.removeprefix("context.mlp_branch.blocks.2.mixer."): value
                           for key, value in converted.items()
                           if key.startswith("context.mlp_branch.blocks.2.mixer.")})
    x = torch.randn(2, 128, 6, 7)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x), original_axial_shift(weights, x), atol=1e-4, rtol=1e-4)
