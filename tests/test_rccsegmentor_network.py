"""RccSegmentor and RccSegmentorLight: size and cost against the published model, shapes, deep supervision,
gradients, state dicts, blocks against the original's formulas, and ImageNet PVTv2 weights from a local file (CPU).

Most tests use timm's smallest encoder (pvt_v2_b0) for speed; the published figures are checked with pvt_v2_b2 on
the meta device (no memory, no arithmetic).
"""
import math

import pytest
import torch
import torch.nn.functional as F

from nnunet_ext.architectures import RccSegmentor, RccSegmentorLight
from nnunet_ext.architectures.profiling import count_macs, count_parameters
from nnunet_ext.architectures.rccsegmentor import remap_pvt_v2_state_dict

pytestmark = pytest.mark.usefixtures("single_thread_torch", "seeded_torch")

SMALL = {"backbone": "pvt_v2_b0"}


def small(cls=RccSegmentor, input_channels: int = 1, num_classes: int = 3, **kwargs):
    return cls(input_channels, num_classes, **SMALL, **kwargs)


# ---- the published size and cost ----------------------------------------------------------------------------

def test_published_model_size_and_cost_at_352():
    with torch.device("meta"):
        net, rgb = RccSegmentor(1, 1), RccSegmentor(3, 1)
    heads = count_parameters(net.decoder.aux_heads)
    assert heads == 2 * 65  # the only parameters the published model lacks
    # measured on the published model.py: 42,527,465 = encoder 24,849,856 + FEM 16,942,050 + MFAD 735,494 + head 65
    assert count_parameters(rgb) - heads == 42_527_465
    assert count_parameters(rgb.encoder) == 24_849_856  # timm's pvt_v2_b2 == the original's PVTv2-b2
    assert count_parameters(net.fem) == 16_942_050
    assert count_parameters(net.decoder) - heads == 735_494
    assert abs(count_parameters(net) / 42_527_465 - 1) < 0.05
    # published: 142.60 GMAC at 1x352x352 (heads off: deep supervision is off in count_macs' forward)
    assert abs(count_macs(net, (1, 1, 352, 352)) / 142.60e9 - 1) < 0.01


def test_light_model_size_and_cost_at_352():
    with torch.device("meta"):
        net = RccSegmentorLight(1, 1)
    assert count_parameters(net) == 25_755_115
    assert count_parameters(net.fem) == 175_842  # depthwise branches: 1 % of the published FEM
    assert abs(count_macs(net, (1, 1, 352, 352)) / 12.8e9 - 1) < 0.02


def test_fem_variants_differ_only_in_the_branch_convolutions():
    published, light = small(RccSegmentor), small(RccSegmentorLight)
    branch_groups = {(name, m.groups) for name, m in light.fem.perception.branches.named_modules()
                     if isinstance(m, torch.nn.Conv2d)}
    channels = light.fem.perception.branches.branches[0].conv.in_channels
    assert branch_groups and all(groups == channels for _, groups in branch_groups)
    assert all(m.groups == 1 for m in published.fem.modules() if isinstance(m, torch.nn.Conv2d))
    assert light.fem.perception.expand.conv.groups == light.fem.perception.project.conv.groups == 1
    light_names = {n for n, _ in light.named_parameters()}
    assert light_names == {n for n, _ in published.named_parameters()}


def test_unknown_backbone_is_refused():
    with pytest.raises(ValueError, match="pvt_v2_b0"):
        RccSegmentor(1, 2, backbone="resnet50")


# ---- shapes, deep supervision, gradients --------------------------------------------------------------------

@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(64, 64), (33, 47), (17, 100), (5, 7)])
def test_output_has_the_input_size(channels, size):
    net = small(RccSegmentorLight, channels, 2).eval()
    with torch.no_grad():
        out = net(torch.randn(1, channels, *size))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, 2, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [(64, 96), (33, 47), (17, 100)])
def test_deep_supervision_outputs_full_size_then_stride_8_and_16(size):
    out = small(deep_supervision=True)(torch.randn(2, 1, *size))
    assert isinstance(out, list) and len(out) == 3
    assert [tuple(o.shape) for o in out] == [(2, 3, *(math.ceil(s / stride) for s in size)) for stride in (1, 8, 16)]


@pytest.mark.parametrize("patch", [(64, 96), (512, 512), (33, 47), (17, 100), (320, 200)])
def test_deep_supervision_scales_give_nnunet_target_sizes_equal_to_the_outputs(patch):
    scales = RccSegmentor.deep_supervision_scales(patch)
    assert len(scales) == 3 and scales[0] == [1.0, 1.0]
    # nnU-Net's DownsampleSegForDSTransform resizes targets to round(size * scale)
    for scale, stride in zip(scales[1:], (8, 16)):
        assert [round(s * f) for s, f in zip(patch, scale)] == [math.ceil(s / stride) for s in patch]
    if all(s % 16 == 0 for s in patch):
        assert scales[1:] == [[0.125, 0.125], [0.0625, 0.0625]]


def test_deep_supervision_is_read_from_the_decoder_at_call_time():
    net = small().eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert isinstance(net(x), torch.Tensor)
        net.decoder.deep_supervision = True  # what nnU-Net's set_deep_supervision_enabled does
        assert isinstance(net(x), list) and len(net(x)) == 3
        net.decoder.deep_supervision = False
        assert isinstance(net(x), torch.Tensor)


@pytest.mark.parametrize("cls", [RccSegmentor, RccSegmentorLight])
def test_every_parameter_gets_a_gradient_in_a_deep_supervision_step(cls):
    net = small(cls, 2, 3, deep_supervision=True).train()
    outputs = net(torch.randn(2, 2, 64, 96))
    sum(o.square().mean() for o in outputs).backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing  # DDP without find_unused_parameters needs every one
    assert all(head.weight.grad.abs().sum() > 0 for head in net.decoder.aux_heads)


def test_state_dict_is_independent_of_deep_supervision():
    with_ds, without_ds = small(deep_supervision=True), small(deep_supervision=False)
    without_ds.load_state_dict(with_ds.state_dict(), strict=True)
    with_ds.eval()
    without_ds.eval()
    x = torch.randn(1, 1, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(with_ds(x)[0], without_ds(x))


def test_inputs_are_zero_padded_to_multiples_of_32_and_cropped_back():
    assert RccSegmentor.padded_input_size([64, 96]) == [64, 96]
    assert RccSegmentor.padded_input_size([33, 5]) == [64, 32]
    net = small(RccSegmentorLight).eval()
    x = torch.randn(1, 1, 40, 70)
    with torch.no_grad():
        padded = F.pad(x, (0, 26, 0, 24))  # explicit zero padding to 64x96
        expected = F.interpolate(net.head(net.fem(net.encoder(padded)[0]) + net.decoder(net.encoder(padded)[1:])[0]),
                                 size=(64, 96), mode="bilinear", align_corners=False)[..., :40, :70]
        torch.testing.assert_close(net(x), expected)


# ---- blocks against the formulas of the published code ------------------------------------------------------

def test_light_channel_and_spatial_attention_follow_the_original():
    fem = small().fem
    x = torch.randn(2, 32, 12, 10)
    cam, sam = fem.channel_attention, fem.spatial_attention
    w1, w2 = cam.mlp[0].weight, cam.mlp[2].weight
    assert cam.mlp[0].bias is None and w1.shape == (2, 32)  # reduction 16, no biases

    def mlp(v):
        return F.relu(v @ w1.T) @ w2.T

    channel_weight = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))[..., None, None]
    torch.testing.assert_close(cam(x), x * channel_weight)
    pooled = torch.cat((x.mean(1, keepdim=True), x.amax(1, keepdim=True)), dim=1)  # mean first, as the original
    torch.testing.assert_close(sam(x), torch.sigmoid(F.conv2d(pooled, sam.conv.weight, padding=3)))


def test_group_gated_attention_follows_the_original():
    gga = small().decoder.cascade.gga_low.eval()
    feature, gate = torch.randn(2, 64, 6, 8), torch.randn(2, 64, 6, 8)
    g = gga.phi_norm(F.conv2d(gate, gga.phi.weight, gga.phi.bias, padding=1))
    f = gga.theta_norm(F.conv2d(feature, gga.theta.weight, gga.theta.bias, padding=1))
    psi = torch.sigmoid(gga.psi_norm(F.conv2d(F.relu(g + f), gga.psi.weight, gga.psi.bias)))
    with torch.no_grad():
        torch.testing.assert_close(gga(feature, gate), feature * psi)
    assert gga.theta.kernel_size == gga.phi.kernel_size == (3, 3)


# ---- ImageNet PVTv2 weights from a local file ---------------------------------------------------------------

@pytest.fixture(scope="module")
def imagenet_b0():
    """A PVTv2-b0 classifier state dict made by timm (3 input channels, ImageNet head), as a checkpoint has it."""
    import timm

    torch.manual_seed(1)
    return timm.create_model("pvt_v2_b0", pretrained=False).state_dict()


def original_layout(state_dict: dict) -> dict:
    """timm's PVTv2 keys → the layout of the PVTv2 authors' checkpoints (the inverse of timm's own filter)."""
    import re

    renamed = {}
    for key, value in state_dict.items():
        key = key.replace("patch_embed.", "patch_embed1.")
        key = re.sub(r"^stages\.(\d+)\.downsample\.", lambda m: f"patch_embed{int(m[1]) + 1}.", key)
        key = re.sub(r"^stages\.(\d+)\.blocks\.", lambda m: f"block{int(m[1]) + 1}.", key)
        key = re.sub(r"^stages\.(\d+)\.norm\.", lambda m: f"norm{int(m[1]) + 1}.", key)
        renamed[key.replace(".dwconv.", ".dwconv.dwconv.")] = value
    return renamed


def test_remapping_of_the_authors_layout_equals_timms(imagenet_b0):
    from timm.models.pvt_v2 import checkpoint_filter_fn

    authors = original_layout(imagenet_b0)
    assert "block1.0.mlp.dwconv.dwconv.weight" in authors and "patch_embed2.proj.weight" in authors
    assert checkpoint_filter_fn(authors, None).keys() == imagenet_b0.keys()  # the test's inverse is right
    assert remap_pvt_v2_state_dict(authors).keys() == remap_pvt_v2_state_dict(imagenet_b0).keys()


@pytest.mark.parametrize("layout, file_name", [("timm", "b0.safetensors"), ("authors", "b0.pth")])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_local_imagenet_weights_are_loaded_with_the_first_conv_adapted(imagenet_b0, tmp_path, layout, file_name,
                                                                      channels):
    from timm.models import adapt_input_conv

    path = tmp_path / file_name
    if layout == "timm":
        from safetensors.torch import save_file
        save_file(imagenet_b0, str(path))
    else:
        torch.save({"model": original_layout(imagenet_b0)}, path)  # nested, as many training scripts save it

    torch.manual_seed(2)
    random_init = small(RccSegmentorLight, channels)
    torch.manual_seed(2)
    net = small(RccSegmentorLight, channels, pretrained_weights=path)
    encoder = net.encoder.state_dict()
    stem = imagenet_b0["patch_embed.proj.weight"]
    torch.testing.assert_close(encoder["patch_embed.proj.weight"], adapt_input_conv(channels, stem))
    if channels == 1:
        torch.testing.assert_close(encoder["patch_embed.proj.weight"], stem.sum(dim=1, keepdim=True))
    for key, value in imagenet_b0.items():
        if key != "patch_embed.proj.weight" and not key.startswith("head."):
            # timm's features_only wrapper names stages.i stages_i
            feature_key = "stages_" + key[len("stages."):] if key.startswith("stages.") else key
            assert torch.equal(encoder[feature_key], value), key
    changed = [k for k, v in random_init.encoder.state_dict().items() if v.is_floating_point() and
               not torch.equal(v, encoder[k])]
    assert {k for k, v in encoder.items() if v.ndim >= 2} <= set(changed)  # every weight matrix and kernel
    encoder_keys = {"encoder." + k for k in encoder}
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in random_init.state_dict().items()
               if k not in encoder_keys)  # the rest of the network is untouched


def test_weights_of_another_size_or_a_missing_file_fail_clearly(imagenet_b0, tmp_path):
    path = tmp_path / "b0.pth"
    torch.save(imagenet_b0, path)
    with torch.device("meta"):
        b2 = RccSegmentor(1, 2)
    with pytest.raises(ValueError, match="another PVTv2 size"):
        b2.load_pretrained_encoder(path)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        small(pretrained_weights=tmp_path / "missing.pth")
