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

from nnunet_ext.architectures import RccSegmentor, RECUNet, SegFormer3DVariant, rccsegmentor, recunet
from nnunet_ext.architectures import segformer3d_variant

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


ORIGINALS = {
    "rccsegmentor": Original(lambda: RccSegmentor(3, 1), rccsegmentor.convert_original_state_dict,
                             our_additions=frozenset(f"decoder.aux_heads.{i}.{p}" for i in (0, 1)
                                                     for p in ("weight", "bias")),
                             build_on_meta=True),
    "recunet": Original(lambda: RECUNet(1, 2), recunet.convert_original_state_dict, build_on_meta=True),
    "segformer3d": Original(lambda: SegFormer3DVariant(1, 3), segformer3d_variant.convert_original_state_dict),
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
