"""The memory model against real training steps on CPU, and its response to precision, optimizer and checkpointing.

Predictions (``device_type="cpu"``, fp32) are compared with ``measure_training_memory``: the peak tensor bytes of a
real training step as torch's profiler records them. Small sizes keep each network to a few seconds; the full
table at larger sizes is ``benchmarks/memory_model.py``.
"""
from __future__ import annotations

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from nnunet_ext.architectures import RccSegmentor, RccSegmentorLight, RECUNet, S2CANet, SegFormer3DVariant
from nnunet_ext.architectures.memory import (
    TrainingMemory, _CudaAutocastPolicy, _fake_state, _LiveTensorMemory, estimate_training_memory,
    measure_training_memory)


def plain_conv_unet() -> nn.Module:
    return PlainConvUNet(1, 3, [8, 16, 32], nn.Conv3d, 3, [1, 2, 2], 2, 3, 2, conv_bias=True,
                         norm_op=nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                         nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True)


# narrower than the defaults, to keep the real training steps short
SMALL_SEGFORMER = {"embed_dims": (16, 32, 64, 128), "num_heads": (1, 2, 4, 8), "decoder_channels": 32}
SMALL_S2CANET = {"patch_size": (16, 16, 16), "embed_dims": (64, 128), "mlp_embed_dim": 32}
NETWORKS = {
    "PlainConvUNet": (plain_conv_unet, (2, 1, 32, 32, 32)),
    "SegFormer3DVariant": (lambda: SegFormer3DVariant(1, 3, True, **SMALL_SEGFORMER), (2, 1, 16, 32, 32)),
    "S2CANet": (lambda: S2CANet(4, 3, True, **SMALL_S2CANET), (2, 4, 16, 16, 16)),
    "RECUNet": (lambda: RECUNet(1, 3, True, features_per_stage=(8, 16, 32, 64, 128)), (2, 1, 64, 64)),
    # 96², not 64²: at 64² the CPU backward of the FEM's dilated convolutions takes an im2col kernel whose buffer,
    # inside one operator, no trace sees (the memory module's docstring)
    "RccSegmentor": (lambda: RccSegmentor(1, 3, True, backbone="pvt_v2_b0"), (2, 1, 96, 96)),
    "RccSegmentorLight": (lambda: RccSegmentorLight(1, 3, True, backbone="pvt_v2_b0"), (2, 1, 64, 64)),
}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_prediction_within_15_percent_of_measured(name):
    factory, shape = NETWORKS[name]
    predicted = estimate_training_memory(factory, shape, device_type="cpu")
    torch.manual_seed(0)
    measured = measure_training_memory(factory(), shape)
    assert predicted.parameters == sum(p.nbytes for p in factory().parameters())
    assert predicted.gradients == predicted.optimizer_state == predicted.parameters  # fp32 grads, one momentum each
    assert abs(predicted.peak / measured - 1) <= 0.15, (name, predicted.peak, measured)


def test_a_built_network_is_borrowed_and_given_back():
    network = plain_conv_unet()
    before = {name: p for name, p in network.named_parameters()}
    by_factory = estimate_training_memory(plain_conv_unet, (2, 1, 32, 32, 32), device_type="cpu")
    borrowed = estimate_training_memory(network, (2, 1, 32, 32, 32), device_type="cpu")
    assert borrowed == by_factory
    assert all(p is before[name] and not p.is_meta for name, p in network.named_parameters())


def test_amp_keeps_less_activation_memory_than_fp32():
    factory, shape = NETWORKS["SegFormer3DVariant"]
    fp32 = estimate_training_memory(factory, shape, precision="fp32")
    amp = estimate_training_memory(factory, shape, precision="amp")
    assert amp.activations < 0.8 * fp32.activations
    assert amp.parameters == fp32.parameters and amp.optimizer_state == fp32.optimizer_state  # fp32 master weights


def test_optimizer_state_follows_the_optimizer():
    shape = (2, 1, 32, 32, 32)
    sgd = estimate_training_memory(plain_conv_unet, shape)
    adam = estimate_training_memory(plain_conv_unet, shape, optimizer_factory=lambda p: torch.optim.Adam(p, 1e-3))
    tensors = len(list(plain_conv_unet().parameters()))
    # two moments per parameter, plus Adam's 4-byte step counter per parameter tensor
    assert adam.optimizer_state == 2 * sgd.optimizer_state + 4 * tensors
    assert adam.peak > sgd.peak


CHECKPOINTED = {
    "SegFormer3DVariant": lambda: SegFormer3DVariant(1, 3, True, activation_checkpointing=True, **SMALL_SEGFORMER),
    "S2CANet": lambda: S2CANet(4, 3, True, activation_checkpointing=True, **SMALL_S2CANET),
    "RECUNet": lambda: RECUNet(1, 3, True, features_per_stage=(8, 16, 32, 64, 128), activation_checkpointing=True),
    "RccSegmentor": lambda: RccSegmentor(1, 3, True, backbone="pvt_v2_b0", activation_checkpointing=True),
}


@pytest.mark.parametrize(("name", "precision"), [(name, "fp32") for name in CHECKPOINTED] + [("S2CANet", "amp")])
def test_activation_checkpointing_lowers_the_estimate(name, precision):
    factory, shape = NETWORKS[name]
    off = estimate_training_memory(factory, shape, precision=precision)
    on = estimate_training_memory(CHECKPOINTED[name], shape, precision=precision)
    assert on.activations < off.activations
    assert on.parameters == off.parameters


@pytest.mark.parametrize("name", list(CHECKPOINTED))
def test_checkpointing_changes_neither_the_state_dict_nor_the_result(name):
    factory, shape = NETWORKS[name]
    torch.manual_seed(0)
    plain, checkpointed = factory(), CHECKPOINTED[name]()
    assert plain.state_dict().keys() == checkpointed.state_dict().keys()
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(shape)
    results = []
    for network in (plain, checkpointed):
        torch.manual_seed(1)  # the same drop-path draws (S2CA-Net's VAS-MLP, the PVTv2 encoder)
        outputs = network.train()(x)
        sum(o.square().mean() for o in outputs).backward()
        results.append([o.detach() for o in outputs] + [p.grad for p in network.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _forward_bytes(network_factory, shape, emulated: bool) -> int:
    """Live bytes after a forward pass under CUDA's real autocast on fake CUDA tensors (where the forward pass runs
    without a GPU), or under the emulation on fake CPU tensors."""
    device = "cpu" if emulated else "cuda"
    with torch.device("meta"):
        network = network_factory()
    with FakeTensorMode(), _LiveTensorMemory() as live, _fake_state(network.train(), live, device):
        x = torch.empty(shape, device=device)
        before = live.current
        if emulated:
            with _CudaAutocastPolicy(), torch.autocast("cpu", dtype=torch.float16):
                output = network(x)
        else:
            torch.set_autocast_enabled("cuda", True)
            torch.set_autocast_dtype("cuda", torch.float16)
            try:
                output = network(x)
            finally:
                torch.set_autocast_enabled("cuda", False)
                torch.clear_autocast_cache()
        assert output is not None
        return live.current - before


# networks without attention: on fake CUDA tensors scaled_dot_product_attention cannot pick the flash or
# memory-efficient kernel a GPU runs (no device to ask) and falls back to its math path, so the reference itself
# would be wrong there (SegFormer3DVariant: 8 % more, all of it in the attention's float32 score matrices)
@pytest.mark.parametrize("name", ["S2CANet", "RECUNet"])
def test_amp_emulation_matches_cuda_autocast_in_the_forward_pass(name):
    factory, shape = NETWORKS[name]
    real = _forward_bytes(factory, shape, emulated=False)
    emulated = _forward_bytes(factory, shape, emulated=True)
    assert abs(emulated / real - 1) <= 0.05, (real, emulated)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="precision"):
        estimate_training_memory(plain_conv_unet, (2, 1, 32, 32, 32), precision="bf16")
    with pytest.raises(ValueError, match="input_shape"):
        estimate_training_memory(plain_conv_unet, (32, 32))
    assert isinstance(estimate_training_memory(plain_conv_unet, (1, 1, 16, 16, 16)), TrainingMemory)
