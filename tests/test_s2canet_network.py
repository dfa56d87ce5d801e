"""S2CANet: size and cost of the original configuration, shapes, size lock, deep supervision, gradients, state dicts
(CPU, tiny patches)."""
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import assert_deep_supervision_follows_the_decoder, assert_state_dict_independent_of_deep_supervision

from nnunet_ext.architectures import S2CANet, s2canet
from nnunet_ext.architectures.profiling import count_macs, count_parameters

pytestmark = pytest.mark.usefixtures("single_thread_torch", "seeded_torch")

# measured on the original repository (4 channels, 4 outputs, 128^3): 21,477,799 parameters, of which 32,787 are
# never used in its forward pass; 86.27 GMAC
ORIGINAL_USED_PARAMETERS = 21_477_799 - 32_787
ORIGINAL_GMAC = 86.27


@pytest.fixture(scope="module")
def original_configuration() -> S2CANet:
    with torch.device("meta"):  # shapes only: no 21 M parameters to initialise
        return S2CANet(4, 4)


def test_parameter_count_matches_the_original_without_its_unused_parameters(original_configuration):
    # plus the attention gates' three ψ biases (blocks.AttentionGate always has one; BatchNorm follows it)
    assert count_parameters(original_configuration) == ORIGINAL_USED_PARAMETERS + 3
    # the largest blocks as measured on the original: both level-3 formers 5.51 M, decoder level-2 former 4.91 M,
    # encoder level-2 former (6 blocks, the backbone's own default) 3.92 M, VAS-MLP 0.95 M
    encoder_level2, encoder_level3 = original_configuration.encoder.formers
    decoder = original_configuration.decoder
    assert round(count_parameters(encoder_level3) / 1e6, 2) == 5.51
    assert round(count_parameters(decoder.bottom_former) / 1e6, 2) == 5.51
    assert round(count_parameters(decoder.formers["2"]) / 1e6, 2) == 4.91
    assert round(count_parameters(encoder_level2) / 1e6, 2) == 3.92
    assert round(count_parameters(original_configuration.context.mlp_branch) / 1e6, 2) == 0.95


def test_macs_match_the_original_at_128_cubed(original_configuration):
    macs = count_macs(original_configuration, torch.zeros(1, 4, 128, 128, 128, device="meta"))
    assert abs(macs / 1e9 - ORIGINAL_GMAC) / ORIGINAL_GMAC < 0.01


def test_cubic_patch_shares_one_fold_pair_non_cubic_has_one_per_plane():
    with torch.device("meta"):
        cubic = S2CANet(1, 2, patch_size=(32, 32, 32))
        non_cubic = S2CANet(1, 2, patch_size=(16, 32, 48))
    former = cubic.encoder.formers[0]
    assert former.shared_fold and len(former.fold_in) == 1 and former.fold_in[0].in_channels == 64 * 8
    former = non_cubic.encoder.formers[0]  # level 2: 4 x 8 x 12
    assert not former.shared_fold
    assert [conv.in_channels for conv in former.fold_in] == [64 * 4, 64 * 8, 64 * 12]
    assert [conv.out_channels for conv in former.fold_out] == [64 * 4, 64 * 8, 64 * 12]


def test_fold_follows_the_originals_channel_major_layout():
    x = torch.randn(2, 3, 4, 5, 6)
    # the original folds its first spatial axis with x.reshape(B, C*S0, S1, S2), the second after moving it next to
    # the channels, and the third likewise
    torch.testing.assert_close(s2canet._fold_axis_into_channels(x, 0), x.reshape(2, 12, 5, 6))
    torch.testing.assert_close(s2canet._fold_axis_into_channels(x, 1), x.permute(0, 1, 3, 2, 4).reshape(2, 15, 4, 6))
    torch.testing.assert_close(s2canet._fold_axis_into_channels(x, 2), x.permute(0, 1, 4, 2, 3).reshape(2, 18, 4, 5))
    for axis in range(3):
        folded = s2canet._fold_axis_into_channels(x, axis)
        torch.testing.assert_close(s2canet._unfold_axis_from_channels(folded, axis, 3), x)


@pytest.mark.parametrize("direction", [1, -1])
@pytest.mark.parametrize("axis", [2, 3])
def test_axial_shift_is_the_zero_filled_roll_of_channel_groups(axis, direction):
    x = torch.randn(2, 13, 6, 7)
    padded = F.pad(x, (2, 2, 2, 2))
    rolled = torch.cat([torch.roll(chunk, direction * (i - 2), axis) for i, chunk in enumerate(padded.chunk(5, 1))], 1)
    expected = rolled[:, :, 2:8, 2:9]
    torch.testing.assert_close(s2canet._shift_channel_groups(x, axis, 5, direction), expected)


@pytest.mark.parametrize("channels", [1, 4])
@pytest.mark.parametrize("patch, size", [((16, 24, 32), (13, 24, 29)), ((16, 16, 16), (16, 16, 16)),
                                         ((16, 16, 16), (9, 3, 11))])
def test_output_has_the_input_size(channels, patch, size):
    net = S2CANet(channels, 3, patch_size=patch).eval()
    with torch.no_grad():
        out = net(torch.randn(1, channels, *size))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, 3, *size)
    assert torch.isfinite(out).all()


def test_smaller_inputs_are_zero_padded_to_the_patch_and_cropped_back():
    net = S2CANet(1, 2, patch_size=(16, 16, 24)).eval()
    x = torch.randn(1, 1, 11, 16, 17)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(F.pad(x, (0, 7, 0, 0, 0, 5)))[..., :11, :16, :17])


def test_larger_input_is_refused_naming_the_patch():
    net = S2CANet(1, 2, patch_size=(16, 16, 16)).eval()
    with pytest.raises(ValueError, match=r"built for patch size \[16, 16, 16\].*got spatial size \[16, 24, 16\]"):
        net(torch.randn(1, 1, 16, 24, 16))


def test_patch_size_rules_and_nearest_patch():
    with pytest.raises(ValueError, match=r"multiple of 8 and at least 16 \(minimum patch \[16, 16, 16\]\)"):
        S2CANet(1, 2, patch_size=(16, 20, 16))
    with pytest.raises(ValueError, match="minimum patch"):
        S2CANet(1, 2, patch_size=(8, 16, 16))
    assert S2CANet.nearest_patch_size([128, 128, 128]) == [128, 128, 128]
    assert S2CANet.nearest_patch_size([20, 43, 163]) == [24, 40, 160]
    with pytest.raises(ValueError, match=r"below S2CANet's minimum of 16 per axis \(minimum patch \[16, 16, 16\]\)"):
        S2CANet.nearest_patch_size([12, 64, 64])


@pytest.mark.parametrize("patch, size", [((16, 24, 32), (16, 24, 32)), ((16, 16, 24), (13, 15, 17))])
def test_deep_supervision_list_heads_at_native_resolution(patch, size):
    net = S2CANet(2, 3, deep_supervision=True, patch_size=patch).eval()
    with torch.no_grad():
        outputs = net(torch.randn(1, 2, *size))
    assert [tuple(o.shape[2:]) for o in outputs] == [tuple(math.ceil(s / k) for s in size) for k in (1, 2, 4, 8)]
    # nnU-Net resizes the targets to round(patch * scale): the sizes the heads produce
    scales = S2CANet.deep_supervision_scales(patch)
    assert [[round(p * f) for p, f in zip(patch, scale)] for scale in scales] == \
        [[p // k for p in patch] for k in (1, 2, 4, 8)]


def test_deep_supervision_is_read_from_the_decoder_at_call_time():
    net = S2CANet(1, 2, deep_supervision=False, patch_size=(16, 16, 16)).eval()
    assert_deep_supervision_follows_the_decoder(net, torch.randn(1, 1, 16, 16, 16), num_outputs=4)


def test_every_parameter_gets_a_gradient_in_a_deep_supervision_step():
    net = S2CANet(4, 3, deep_supervision=True, patch_size=(16, 24, 16)).train()
    outputs = net(torch.randn(2, 4, 16, 24, 16))
    sum(o.square().mean() for o in outputs).backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    zero = [name for name, p in net.named_parameters() if p.grad.abs().sum() == 0 and "psi.bias" not in name]
    assert not zero  # (a bias right before BatchNorm, as ψ's in the gates, has an exactly cancelled gradient)


def test_state_dict_is_independent_of_deep_supervision():
    assert_state_dict_independent_of_deep_supervision(
        lambda deep_supervision: S2CANet(1, 3, deep_supervision=deep_supervision, patch_size=(16, 16, 16)),
        torch.randn(1, 1, 16, 16, 16))


def original_vas_mlp(mlp: s2canet.TriPlanarAxialShiftMLP, x: torch.Tensor, h_d_back=(0, 2, 1, 3, 4)) -> torch.Tensor:
    """VAS-MLP with the reshapes the original AspmlpBlock_Light_B writes (x as (B, C, H, W, D)), using ``mlp``'s
    layers; the original brings its H-D planes back with reshape(B, W, C, H, D).permute(0, 2, 1, 3, 4), H and W
    swapped, where (0, 2, 3, 1, 4) would restore them."""
    b, c, h, w, d = x.shape

    def planes(stack: torch.Tensor) -> torch.Tensor:
        return mlp.project(mlp.blocks(mlp.embed_norm(mlp.embed(stack))))

    wd = planes(x.permute(0, 2, 1, 3, 4).reshape(b * h, c, w, d)).reshape(b, h, c, w, d).permute(0, 2, 1, 3, 4)
    hd = planes(x.permute(0, 3, 1, 2, 4).reshape(b * w, c, h, d)).reshape(b, w, c, h, d).permute(*h_d_back)
    hw = planes(x.permute(0, 4, 1, 2, 3).reshape(b * d, c, h, w)).reshape(b, d, c, h, w).permute(0, 2, 3, 4, 1)
    return mlp.fuse(torch.cat([wd, hd, hw], dim=1))


def test_vas_mlp_restores_each_plane_and_original_compatible_swaps_as_the_original():
    mlp = s2canet.TriPlanarAxialShiftMLP(12, 5, embed_dim=16, depth=2, shift=5).eval()
    with torch.no_grad():
        non_cubic = torch.randn(2, 12, 5, 6, 4)
        torch.testing.assert_close(mlp(non_cubic), original_vas_mlp(mlp, non_cubic, h_d_back=(0, 2, 3, 1, 4)))
        x = torch.randn(2, 12, 6, 6, 4)
        ours = mlp(x)
        mlp.original_compatible = True
        torch.testing.assert_close(mlp(x), original_vas_mlp(mlp, x))
        assert not torch.allclose(mlp(x), ours, atol=1e-3)
        with pytest.raises(ValueError, match="needs them of equal size; got"):
            mlp(non_cubic)


def test_original_compatible_needs_a_cubic_patch():
    with pytest.raises(ValueError, match=r"original_compatible=True needs a cubic patch.*got \[16, 16, 24\]"):
        S2CANet(1, 2, patch_size=(16, 16, 24), original_compatible=True)


def test_original_compatible_keeps_the_state_dict_and_changes_only_the_computation():
    ours = S2CANet(2, 3, patch_size=(16, 16, 16)).eval()
    original = S2CANet(2, 3, patch_size=(16, 16, 16), original_compatible=True).eval()
    original.load_state_dict(ours.state_dict(), strict=True)
    assert original.context.mlp_branch.original_compatible and original.skip_refinement.deformable.deform.border == \
        "floor"
    with torch.no_grad():
        ours.skip_refinement.deformable.offset.weight.mul_(30)  # offsets of several voxels reach the border
        original.skip_refinement.deformable.offset.weight.copy_(ours.skip_refinement.deformable.offset.weight)
        x = torch.randn(1, 2, 16, 16, 16)
        assert not torch.allclose(ours(x), original(x), atol=1e-4)


def test_metaformer_mlps_are_initialised_as_the_originals():
    block = s2canet.MetaFormerBlock2D(256)
    # PoolFormer's rule in the original: truncated normal (std 0.02), zero biases
    for layer in (block.mlp[0], block.mlp[2], block.channel_attention.mlp[0], block.channel_attention.mlp[2]):
        assert abs(layer.weight.std().item() - 0.02) < 0.002
        assert layer.bias is None or not layer.bias.any()
    # the token mixer's convolution keeps PyTorch's default (uniform, std 1/sqrt(3·fan_in))
    assert abs(block.mix.weight.std().item() - 1 / math.sqrt(3 * 256)) < 0.002
