"""RECUNet and triplet attention: fidelity figures, shapes, padding, deep supervision, gradients, state dicts (CPU)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnunet_ext.architectures import RECUNet
from nnunet_ext.architectures.blocks import TripletAttention
from nnunet_ext.architectures.profiling import count_macs, count_parameters
from nnunet_ext.architectures.recunet import CalibrationModule, UpConv

SMALL = (4, 8, 8, 16, 16)

pytestmark = pytest.mark.usefixtures("single_thread_torch", "seeded_torch")


def _permuted_triplet_attention(block: TripletAttention, x: torch.Tensor) -> torch.Tensor:
    """Triplet attention written as the paper draws it: per branch, rotate x so that one axis becomes dim 1,
    Z-pool and gate the rotated copy, rotate back; then average the re-weighted copies."""
    outputs = []
    for axis, gate in enumerate(block.gates, start=1):
        rotated = x.transpose(1, axis).contiguous()
        pooled = torch.cat((rotated.max(dim=1, keepdim=True)[0], rotated.mean(dim=1, keepdim=True)), dim=1)
        gated = rotated * torch.sigmoid(gate.norm(gate.conv(pooled)))
        outputs.append(gated.transpose(1, axis))
    return sum(outputs) / len(outputs)


def test_parameters_and_macs_match_the_original_at_352():
    network = RECUNet(1, 2)
    # measured on the original REC_UNet: 34,880,186 parameters, 125.52 GMAC at 352x352
    assert count_parameters(network) == 34_880_186
    assert count_parameters(network.encoder[-1]) == 14_162_220  # bottom REM
    assert count_parameters(network.decoder.up[0]) == 4_720_128  # first up-convolution
    assert abs(count_macs(network, (1, 1, 352, 352)) / 1e9 - 125.52) < 0.01


def test_norm_momenta_follow_the_original():
    network = RECUNet(1, 2, features_per_stage=SMALL)
    momenta = {name: m.momentum for name, m in network.named_modules() if isinstance(m, nn.BatchNorm2d)}
    attention = {name: v for name, v in momenta.items() if ".attention.gates." in name}
    assert len(attention) == 9 * 3 and set(attention.values()) == {0.01}
    assert {v for name, v in momenta.items() if name not in attention} == {0.1}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(32, 48), (17, 33), (50, 7)])
def test_output_has_the_input_size(channels, size):
    network = RECUNet(channels, 2, features_per_stage=SMALL).eval()
    with torch.no_grad():
        out = network(torch.randn(2, channels, *size))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 2, *size)
    assert torch.isfinite(out).all()


def test_odd_sizes_are_padded_to_16_and_cropped_back():
    assert RECUNet.padded_input_size([17, 33]) == [32, 48]
    assert RECUNet.padded_input_size([352, 7]) == [352, 16]
    network = RECUNet(1, 2, features_per_stage=SMALL).eval()
    x = torch.randn(1, 1, 17, 30)
    with torch.no_grad():
        torch.testing.assert_close(network(x), network(F.pad(x, (0, 2, 0, 15)))[..., :17, :30])


def test_deep_supervision_is_the_single_head_in_a_list_switched_by_the_decoder():
    network = RECUNet(1, 3, deep_supervision=True, features_per_stage=SMALL).eval()
    x = torch.randn(1, 1, 20, 24)
    with torch.no_grad():
        out = network(x)
        assert isinstance(out, list) and len(out) == 1 and out[0].shape == (1, 3, 20, 24)
        network.decoder.deep_supervision = False  # what nnU-Net's set_deep_supervision_enabled does
        torch.testing.assert_close(network(x), out[0])
    assert RECUNet.deep_supervision_scales((64, 48)) == [[1.0, 1.0]]
    assert RECUNet.deep_supervision_scales((16, 32, 32)) == [[1.0, 1.0, 1.0]]


@pytest.mark.parametrize("conv_op, size", [(nn.Conv2d, (24, 20)), (nn.Conv3d, (9, 17, 16))])
def test_every_parameter_gets_a_gradient(conv_op, size):
    network = RECUNet(2, 2, deep_supervision=True, conv_op=conv_op, features_per_stage=SMALL).train()
    (out,) = network(torch.randn(2, 2, *size))
    assert out.shape == (2, 2, *size)
    F.binary_cross_entropy_with_logits(out, torch.rand_like(out)).backward()
    missing = [name for name, p in network.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert network.encoder[0].attention.gates[1].conv.weight.grad.abs().sum() > 0


def test_state_dict_is_independent_of_deep_supervision():
    with_ds = RECUNet(1, 2, deep_supervision=True, features_per_stage=SMALL)
    without_ds = RECUNet(1, 2, deep_supervision=False, features_per_stage=SMALL)
    without_ds.load_state_dict(with_ds.state_dict(), strict=True)
    x = torch.randn(1, 1, 16, 32)
    with torch.no_grad():
        torch.testing.assert_close(with_ds.eval()(x)[0], without_ds.eval()(x))


def test_3d_form_has_a_gate_per_axis_and_keeps_odd_sizes():
    network = RECUNet(1, 2, conv_op=nn.Conv3d, features_per_stage=SMALL).eval()
    assert len(network.encoder[0].attention.gates) == 4
    with torch.no_grad():
        assert network(torch.randn(1, 1, 5, 18, 11)).shape == (1, 2, 5, 18, 11)


def test_invalid_configurations_are_refused():
    with pytest.raises(ValueError, match="2D or 3D"):
        RECUNet(1, 2, conv_op=nn.Conv1d)
    with pytest.raises(ValueError, match="at least 2 stages"):
        RECUNet(1, 2, features_per_stage=(8,))


@pytest.mark.parametrize("conv_op, dims", [(nn.Conv2d, 2), (nn.Conv3d, 3)])
def test_triplet_attention_equals_the_rotate_and_average_formulation(conv_op, dims):
    block = TripletAttention(conv_op, kernel_size=3 if dims == 3 else 7)
    with torch.no_grad():
        for gate in block.gates:  # non-trivial norms, so that a swapped branch would show
            gate.norm.weight.uniform_(0.5, 2)
            gate.norm.bias.uniform_(-1, 1)
    x = torch.relu(torch.randn(2, 5, *([6, 7, 8][:dims])))  # ReLU inputs: ties at 0, as in the network
    block.train()
    torch.testing.assert_close(block(x), _permuted_triplet_attention(block, x))
    assert count_parameters(block) == (dims + 1) * (2 * (3 if dims == 3 else 7) ** dims + 2)


def test_triplet_attention_branches_see_different_planes():
    block = TripletAttention(nn.Conv2d).eval()
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        reference = block(x)
        block.gates[1].conv.weight.add_(torch.randn_like(block.gates[1].conv.weight))
        assert not torch.allclose(block(x), reference)
    with pytest.raises(ValueError, match="odd"):
        TripletAttention(nn.Conv2d, kernel_size=4)


def test_calibration_module_concatenates_the_gated_skip_then_the_gate():
    module = CalibrationModule(nn.Conv2d, 6, 3).eval()
    skip, gate = torch.randn(2, 6, 8, 8), torch.randn(2, 6, 8, 8)
    with torch.no_grad():
        out = module(skip, gate)
        assert out.shape == (2, 12, 8, 8)
        torch.testing.assert_close(out[:, 6:], gate)
        ratio = out[:, :6] / skip  # one weight in (0, 1) per position, shared by the channels
        assert ((ratio > 0) & (ratio < 1)).all()
        torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio))


def test_up_convolution_upsamples_by_nearest_neighbour():
    up = UpConv(nn.Conv2d, 4, 2).eval()
    x = torch.randn(1, 4, 3, 5)
    with torch.no_grad():
        torch.testing.assert_close(up(x), up.conv(x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)))
