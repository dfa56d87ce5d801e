"""REC-UNet: a U-Net with residual cross-dimensional attention for liver tumour segmentation.

Paper:
    "REC-UNet: A U-Net model with residual cross-dimensional attention for liver tumor segmentation"
    (code: github.com/459806555/REC-UNet, ``REC_UNet.py``). Builds on Attention U-Net (Oktay et al., MIDL 2018)
    and triplet attention (Misra et al., WACV 2021).

Re-implemented from a written description of the original: the same layers, widths, norms and order of
operations. Differences, none of which changes the function of the original 2D network:
  * ``input_channels`` and ``num_classes`` are arguments (the original keeps channel 1 of a 3-slice stack and
    has 2 outputs);
  * inputs of any size: the original needs sizes divisible by 16; here other sizes are zero-padded at their end
    and the output cropped back;
  * the convolution class selects 2D or 3D (the original is 2D; the 3D form pools by 2 along every axis and its
    triplet attention has a branch per axis);
  * triplet attention re-weights its input once by the mean of the branch weights (see
    ``blocks.TripletAttention``).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import AttentionGate, TripletAttention, matching_norm, spatial_dims
from .blocks.checkpointing import checkpointed
from .blocks.ops import crop_to_size, deep_supervision_scales, pad_to_size, round_up_to_multiple
from .weight_conversion import BATCH_NORM_ENTRIES, RenameRule, rename_keys

ORIGINAL_FEATURES = (64, 128, 256, 512, 1024)


class ConvNormReLU(nn.Sequential):
    """3×3(×3) convolution (bias, "same" padding) → BatchNorm (PyTorch defaults) → ReLU.

    Args:
        conv_op: ``nn.Conv2d`` or ``nn.Conv3d``.
        in_channels: input channels.
        out_channels: output channels.

    Shapes:
        input (B, in_channels, *S) → output (B, out_channels, *S).
    """

    def __init__(self, conv_op: type[nn.Module], in_channels: int, out_channels: int) -> None:
        super().__init__(conv_op(in_channels, out_channels, 3, padding=1, bias=True),
                         matching_norm(conv_op, "batch")(out_channels),
                         nn.ReLU(inplace=True))


class ResidualEnhancementModule(nn.Module):
    """REM: two conv-BN-ReLU layers, triplet attention on the second, averaged with the first.

        x1 = ConvNormReLU(x);  x2 = TripletAttention(ConvNormReLU(x1));  output = (x1 + x2) / 2

    Args:
        conv_op: ``nn.Conv2d`` or ``nn.Conv3d``.
        in_channels: input channels.
        out_channels: output channels.

    Shapes:
        input (B, in_channels, *S) → output (B, out_channels, *S).

    ``activation_checkpointing`` (attribute, default False, set by ``RECUNet``): recompute the triplet attention
    in the backward pass.
    """

    activation_checkpointing = False

    def __init__(self, conv_op: type[nn.Module], in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvNormReLU(conv_op, in_channels, out_channels)
        self.conv2 = ConvNormReLU(conv_op, out_channels, out_channels)
        self.attention = TripletAttention(conv_op)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        attended = checkpointed(self.attention, self.conv2(x1),
                                enabled=self.activation_checkpointing and self.training)
        return (x1 + attended) * 0.5


class CalibrationModule(nn.Module):
    """CM: an additive attention gate on the encoder skip, then concatenation with the decoder feature.

    ψ = sigmoid(BN(conv_ψ(ReLU(BN(conv_x(skip)) + BN(conv_g(gate)))))), all 1×1 convolutions with bias and
    BatchNorm with PyTorch's defaults; output = concat(skip · ψ, gate) along channels, gated skip first.

    Args:
        conv_op: ``nn.Conv2d`` or ``nn.Conv3d``.
        channels: channels of the skip and of the gate (equal in REC-UNet).
        inter_channels: F_int, channels of the gate's hidden layer.

    Shapes:
        skip (B, channels, *S), gate (B, channels, *S) → output (B, 2·channels, *S).
    """

    def __init__(self, conv_op: type[nn.Module], channels: int, inter_channels: int) -> None:
        super().__init__()
        self.gate = AttentionGate(conv_op, channels, channels, inter_channels, bias=True,
                                  norm_op=matching_norm(conv_op, "batch"), nonlin=nn.ReLU)

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.gate(skip, gate), gate), dim=1)


class UpConv(nn.Module):
    """Nearest-neighbour ×2 upsampling → ConvNormReLU (halves the channels in REC-UNet).

    Shapes:
        input (B, in_channels, *S) → output (B, out_channels, *2S).
    """

    def __init__(self, conv_op: type[nn.Module], in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = ConvNormReLU(conv_op, in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class RECUNetDecoder(nn.Module):
    """Decoder: per level (deep to shallow) UpConv → CalibrationModule with the skip → REM; then a 1×1 head.

    Args:
        conv_op: ``nn.Conv2d`` or ``nn.Conv3d``.
        features_per_stage: encoder widths, shallow to deep.
        num_classes: output channels of the 1×1 head (with bias).
        deep_supervision: whether ``RECUNet.forward`` returns a list; nnU-Net switches this attribute at run time.
    """

    def __init__(self, conv_op: type[nn.Module], features_per_stage: Sequence[int], num_classes: int,
                 deep_supervision: bool) -> None:
        super().__init__()
        self.deep_supervision = deep_supervision
        deep_to_shallow = list(reversed(features_per_stage))
        self.up = nn.ModuleList()
        self.calibration = nn.ModuleList()
        self.rem = nn.ModuleList()
        for deeper, width in zip(deep_to_shallow[:-1], deep_to_shallow[1:]):
            self.up.append(UpConv(conv_op, deeper, width))
            # F_int is half the level's width (256, 128, 64, 32 in the original)
            self.calibration.append(CalibrationModule(conv_op, width, width // 2))
            self.rem.append(ResidualEnhancementModule(conv_op, 2 * width, width))
        self.head = conv_op(features_per_stage[0], num_classes, 1, bias=True)

    def forward(self, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        x = skips[-1]
        for up, calibration, rem, skip in zip(self.up, self.calibration, self.rem, reversed(skips[:-1])):
            x = rem(calibration(skip, up(x)))
        return self.head(x)


class RECUNet(nn.Module):
    """REC-UNet: U-Net with Residual Enhancement Modules and attention-gated (Calibration Module) skips.

    Encoder: REM(C_in→f0) then, per stage, 2×(×2) max-pooling → REM(f_{i-1}→f_i); f = 64, 128, 256, 512, 1024.
    Decoder, per level from deep to shallow: nearest ×2 upsampling + 3×3 conv-BN-ReLU to the level's width →
    CM(gate = that feature, skip = encoder feature of the level, F_int = width/2) → REM(2·width → width).
    Head: 1×1 conv (bias) to ``num_classes`` logits; no activation (nnU-Net applies sigmoid for regions).

    Fidelity (1×352×352, 2 outputs, measured with ``nnunet_ext.architectures.profiling``): 34,880,186 parameters
    (the original's count exactly) and 125.52 GMAC (the original measured 125.52). ``convert_original_state_dict``
    loads the original's weights into ``RECUNet(1, 2)``; with random weights (every parameter and BatchNorm
    statistic), eval mode and a 3×352×352 input (ours given its channel 1), the outputs differ from the original
    code's by at most 5.0e-7 of the largest output (float rounding). Deliberate differences and their effect:
      * input channels and classes are arguments; the original takes 3 slices, keeps channel 1 inside
        ``forward`` and has 2 outputs: none for ``RECUNet(1, 2)`` given that channel;
      * zero-padding to multiples of 16: none, the original runs at multiples of 16 only;
      * triplet attention re-weights once by the mean gate weight, and orders its gates by the pooled axis
        (C, H, W; the original registers H, W, then C): none, the converter maps the gates by name;
      * the 3D form: no counterpart in the original.

    Args:
        input_channels: image channels (nnU-Net's input channels).
        num_classes: output channels (nnU-Net's segmentation heads: regions with sigmoid, or labels).
        deep_supervision: initial value of ``self.decoder.deep_supervision``. The original has one head and no
            deep supervision, and none is added: when True, ``forward`` returns the single full-resolution output
            in a one-element list, and ``deep_supervision_scales`` lists that one scale.
        conv_op: ``nn.Conv2d`` (the original) or ``nn.Conv3d`` (3D form).
        features_per_stage: widths of the five stages, shallow to deep (smaller values for tests).
        activation_checkpointing: recompute the triplet attention of every REM in the backward pass instead of
            keeping its activations (``torch.utils.checkpoint``; only in training with gradients on; no
            state-dict change).

    Shapes:
        input (B, input_channels, *S) with S of 2 or 3 axes, any size → logits (B, num_classes, *S), or
        [those logits] when ``decoder.deep_supervision`` is True. Axes not divisible by 16 (2^pools) are
        zero-padded at their end to ``padded_input_size(S)`` and the output cropped back.
    """

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False,
                 conv_op: type[nn.Module] = nn.Conv2d,
                 features_per_stage: Sequence[int] = ORIGINAL_FEATURES, activation_checkpointing: bool = False) -> None:
        super().__init__()
        if len(features_per_stage) < 2:
            raise ValueError(f"features_per_stage needs at least 2 stages, got {list(features_per_stage)}")
        self.dims = spatial_dims(conv_op)
        if self.dims not in (2, 3):
            raise ValueError(f"RECUNet is 2D or 3D; conv_op {conv_op.__name__} has {self.dims} spatial axes")
        self.features_per_stage = tuple(int(f) for f in features_per_stage)
        pool = nn.MaxPool2d if self.dims == 2 else nn.MaxPool3d
        self.pool = pool(kernel_size=2, stride=2)
        widths_in = (input_channels, *self.features_per_stage[:-1])
        self.encoder = nn.ModuleList(ResidualEnhancementModule(conv_op, c_in, c_out)
                                     for c_in, c_out in zip(widths_in, self.features_per_stage))
        self.decoder = RECUNetDecoder(conv_op, self.features_per_stage, num_classes, deep_supervision)
        for module in self.modules():
            if isinstance(module, ResidualEnhancementModule):
                module.activation_checkpointing = activation_checkpointing

    @property
    def total_stride(self) -> int:
        return 2 ** (len(self.features_per_stage) - 1)

    @staticmethod
    def padded_input_size(size: Sequence[int], total_stride: int = 16) -> list[int]:
        """The spatial size the layers process for an input of ``size``: each axis rounded up to a multiple of
        ``total_stride`` (16 for the original's four poolings)."""
        return round_up_to_multiple(size, total_stride)

    @staticmethod
    def deep_supervision_scales(patch_size: Sequence[int]) -> list[list[float]]:
        """Scale of each output relative to the patch: the single full-resolution head."""
        return deep_supervision_scales(patch_size, [1])

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        size = list(x.shape[2:])
        skips = [self.encoder[0](pad_to_size(x, self.padded_input_size(size, self.total_stride)))]
        for stage in self.encoder[1:]:
            skips.append(stage(self.pool(skips[-1])))
        logits = crop_to_size(self.decoder(skips), size)
        return [logits] if self.decoder.deep_supervision else logits


# ---- the original's weights ------------------------------------------------------------------------------------

def _rem_rules(original: str, ours: str) -> list[RenameRule]:
    """Rules for one original ``REM_block`` → our ``ResidualEnhancementModule``.

    The original's ``EM_block`` registers its gates in the order ChannelGateH (swaps C and H), ChannelGateW (swaps
    C and W), SpatialGate (pools over C); ours orders the branches by the swapped axis: 0 = C (spatial), 1 = H,
    2 = W. The three gates have identical shapes, so only these names tell them apart.
    """
    em = rf"{re.escape(original)}\.conv2\.3"
    rules: list[RenameRule] = [(rf"{re.escape(original)}\.(conv[12])\.([01])\.{BATCH_NORM_ENTRIES}",
                                rf"{ours}.\1.\2.\3")]
    for gate, branch in (("SpatialGate", 0), ("ChannelGateH", 1), ("ChannelGateW", 2)):
        rules += [(rf"{em}\.{gate}\.spatial\.conv\.weight", f"{ours}.attention.gates.{branch}.conv.weight"),
                  (rf"{em}\.{gate}\.spatial\.bn\.{BATCH_NORM_ENTRIES}",
                   rf"{ours}.attention.gates.{branch}.norm.\1")]
    return rules


def _original_recunet_rules() -> list[RenameRule]:
    """The original ``REC_UNet`` (REC_UNet.py) → ``RECUNet(1, 2)``, key by key."""
    rules: list[RenameRule] = []
    for stage in range(1, 6):
        rules += _rem_rules(f"Conv{stage}", f"encoder.{stage - 1}")
    # the original numbers its decoder levels by the deeper stage: 5 (deepest) ... 2; ours from deep to shallow
    for level, original in enumerate(range(5, 1, -1)):
        rules += [(rf"Up{original}\.up\.1\.(weight|bias)", rf"decoder.up.{level}.conv.0.\1"),
                  (rf"Up{original}\.up\.2\.{BATCH_NORM_ENTRIES}", rf"decoder.up.{level}.conv.1.\1"),
                  *_rem_rules(f"Up_conv{original}", f"decoder.rem.{level}")]
        # CM_block(g, x) gates the skip x: W_x is our θ (on the skip), W_g our φ (on the up-sampled gate)
        gate = f"decoder.calibration.{level}.gate"
        for branch, name in (("W_x", "theta"), ("W_g", "phi"), ("psi", "psi")):
            rules += [(rf"Att{original}\.{branch}\.0\.(weight|bias)", rf"{gate}.{name}.\1"),
                      (rf"Att{original}\.{branch}\.1\.{BATCH_NORM_ENTRIES}", rf"{gate}.{name}_norm.\1")]
    return rules + [(r"Conv\.(weight|bias)", r"decoder.head.\1")]


def convert_original_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict of the original REC-UNet (github.com/459806555/REC-UNet, ``REC_UNet.py``, ``REC_UNet``) as
    one of ``RECUNet(1, 2)``; names only (every tensor keeps its layout), by a table of rules.

    The result loads strictly: REC-UNet has no deep-supervision heads to add. Feed ``RECUNet(1, 2)`` channel 1
    of the original's 3-slice input (the original selects it inside ``forward``).

    Raises:
        KeyError: a key of the original that has no counterpart here (naming it).
    """
    return rename_keys(state_dict, _original_recunet_rules(), "REC-UNet")
