"""RccSegmentor: clear-cell renal cell carcinoma segmentation in CT, slice by slice (2D).

Paper:
    Zhang, Chen, Wang, Shan & Zhang, "RccSegmentor: Advancing Renal Cell Carcinoma Segmentation via Feature
        Aggregation and Exploration", Neurocomputing (under review), 2025 (github.com/Mr-AlbertZhang/RccSegmentor,
        model.py; the repository publishes the model only).
Building blocks named there:
    Wang et al., "PVT v2: Improved Baselines with Pyramid Vision Transformer", Computational Visual Media 2022 --
        the encoder, taken from timm (``pvt_v2_b0`` ... ``pvt_v2_b5``, ``features_only``), not re-written.
    Woo et al., "CBAM", ECCV 2018 -- the light channel and spatial attention of the Feature Exploration Module.
    Rahman et al., "EMCAD: Efficient Multi-scale Convolutional Attention Decoding", CVPR 2024 -- the multi-scale
        convolution block behind the Multi-scale Global Perception Unit and the gated attention of the decoder.

Re-implemented from a written description of the published model: the same layers and parameter tensors (names
are our own, timm's for the encoder) and the same function, with these differences:
  * ``num_classes`` output logits (nnU-Net applies softmax or sigmoid) instead of the single binary logit, and any
    number of input channels (timm's ``in_chans``) instead of a fixed 3;
  * deep supervision, which the original lacks: two 1×1 heads on the decoder levels (the aggregated 1/8 map and
    the first cascade level at 1/16), used only when ``decoder.deep_supervision`` is on;
  * any input size: the original breaks unless sizes are (almost) multiples of 32; here inputs are zero-padded
    to the next multiple of 32 and the outputs cropped back;
  * the light variant (``RccSegmentorLight``), see below.
"""
from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import AttentionGate, depthwise_conv
from .blocks.cbam import ChannelGate, SpatialAttentionMap
from .blocks.checkpointing import checkpointed
from .blocks.ops import crop_to_size, deep_supervision_scales, downsampled_size, pad_to_size, round_up_to_multiple
from .weight_conversion import BATCH_NORM_ENTRIES, RenameRule, rename_keys

PVT_V2_VARIANTS = ("pvt_v2_b0", "pvt_v2_b1", "pvt_v2_b2", "pvt_v2_b3", "pvt_v2_b4", "pvt_v2_b5")
TOTAL_STRIDE = 32
# stride of each output relative to the input: main head (upsampled), aggregated decoder map, first cascade level
DEEP_SUPERVISION_STRIDES = (1, 8, 16)


# ---- the PVTv2 encoder (timm) and its ImageNet weights ----------------------------------------------------------

def create_pvt_v2_encoder(variant: str, in_chans: int, drop_path_rate: float) -> nn.Module:
    """timm's PVTv2 ``variant`` as a ``features_only`` encoder, randomly initialised (nothing is downloaded).

    timm is imported here, not at module level: ``nnunet_ext.architectures`` must import without it.

    Shapes:
        input (B, in_chans, H, W), H and W multiples of 32 → four maps at strides 4/8/16/32
        (64/128/320/512 channels for b1-b5, 32/64/160/256 for b0).
    """
    if variant not in PVT_V2_VARIANTS:
        raise ValueError(f"Unknown PVTv2 variant {variant!r}; choose one of {', '.join(PVT_V2_VARIANTS)}")
    with warnings.catch_warnings():
        # timm's HRNet module, imported with every timm model, still declares a torch.jit.interface
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.interface` is deprecated", category=FutureWarning)
        import timm

    return timm.create_model(variant, pretrained=False, features_only=True, in_chans=in_chans,
                             drop_path_rate=drop_path_rate)


def remap_pvt_v2_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the keys of an ImageNet PVTv2 checkpoint to those of timm's ``features_only`` PVTv2.

    Accepts the original layout of the PVTv2 authors (``patch_embed1``, ``block1.0``, ``norm1``,
    ``mlp.dwconv.dwconv``) and timm's (``patch_embed``, ``stages.0.blocks.0``, ``stages.0.norm``); drops the
    ImageNet classifier (``head.*``). timm's ``features_only`` wrapper flattens ``stages.i`` to ``stages_i``.
    """
    remapped = {}
    for key, value in state_dict.items():
        if key.startswith("head."):
            continue
        key = re.sub(r"^patch_embed1\.", "patch_embed.", key)
        key = re.sub(r"^patch_embed([2-9])\.", lambda m: f"stages.{int(m[1]) - 1}.downsample.", key)
        key = re.sub(r"^block(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}.blocks.", key)
        key = re.sub(r"^norm(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}.norm.", key)
        key = key.replace(".dwconv.dwconv.", ".dwconv.")
        key = re.sub(r"^stages\.(\d+)\.", r"stages_\1.", key)
        remapped[key] = value
    return remapped


def load_pvt_v2_weights(encoder: nn.Module, path: str | os.PathLike, variant: str) -> int:
    """Load a local ImageNet PVTv2 checkpoint into ``encoder`` (from ``create_pvt_v2_encoder``); nothing is
    downloaded. Returns the number of tensors loaded.

    The file may be a ``.safetensors`` or a torch checkpoint (a state dict, or one under ``state_dict``/``model``),
    in the original or timm's key layout. The first convolution is adapted to the encoder's input channels as
    timm does (``adapt_input_conv``: RGB kernels summed for one channel, repeated and rescaled for more).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the checkpoint does not fit the encoder (another PVTv2 size, say).
    """
    from timm.models import adapt_input_conv, load_state_dict

    if not os.path.isfile(path):
        raise FileNotFoundError(f"No PVTv2 checkpoint at {path}. Give the path of a local ImageNet {variant} "
                                f"checkpoint (e.g. timm's {variant}.in1k model.safetensors); nothing is downloaded.")
    state_dict = remap_pvt_v2_state_dict(load_state_dict(str(path), use_ema=False, weights_only=True))
    target = encoder.state_dict()
    stem = "patch_embed.proj.weight"
    if stem in state_dict and state_dict[stem].ndim == 4 and stem in target:
        in_chans = target[stem].shape[1]
        if state_dict[stem].shape[1] != in_chans:
            state_dict[stem] = adapt_input_conv(in_chans, state_dict[stem])
    missing = sorted(set(target) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(target))
    mismatched = sorted(k for k in set(target) & set(state_dict) if target[k].shape != state_dict[k].shape)
    if missing or unexpected or mismatched:
        problems = [f"{len(keys)} {what} (first: {keys[0]})" for keys, what in
                    ((missing, "missing keys"), (unexpected, "unexpected keys"),
                     (mismatched, "tensors of another shape")) if keys]
        raise ValueError(f"The checkpoint {path} does not fit timm's {variant}: {'; '.join(problems)}. "
                         f"Is it a checkpoint of another PVTv2 size? Use an ImageNet {variant} checkpoint, or the "
                         f"backbone that matches the checkpoint.")
    encoder.load_state_dict(state_dict, strict=True)
    return len(state_dict)


# ---- layers --------------------------------------------------------------------------------------------------

class ConvBNAct(nn.Module):
    """Convolution without bias → BatchNorm2d → activation, "same" padding (the original's BasicConv2d with ReLU).

    Depthwise convolutions (groups = channels) run through ``blocks.depthwise_conv`` (faster backward on CPU).

    Args:
        in_channels, out_channels: channels.
        kernel_size: int or (kh, kw), odd.
        dilation: dilation of the convolution.
        groups: convolution groups.
        nonlin: activation class (``nn.ReLU``, ``nn.ReLU6``) or None.

    Shapes:
        (B, in_channels, H, W) → (B, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], dilation: int = 1,
                 groups: int = 1, nonlin: type[nn.Module] | None = nn.ReLU) -> None:
        super().__init__()
        kernel = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        padding = tuple(dilation * (k - 1) // 2 for k in kernel)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, padding=padding, dilation=dilation, groups=groups,
                              bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.nonlin = nonlin(inplace=True) if nonlin is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin(self.norm(depthwise_conv(self.conv, x)))


class MultiScaleDilatedConvs(nn.Module):
    """Four parallel branches of the Multi-scale Global Perception Unit (MSDC in the original), concatenated.

    P1 = 1×1 conv; Pk (k = 3, 5, 7) = (1×k) conv → (k×1) conv → k×k conv with dilation 3; every convolution
    with BatchNorm and ReLU6. The published model uses ordinary convolutions (``groups`` = 1); the light variant
    depthwise ones (``groups`` = channels).

    Args:
        channels: C, channels of every branch.
        depthwise: depthwise instead of ordinary convolutions.
        kernel_sizes: k of the factorised branches.
        dilation: dilation of the last convolution of each factorised branch.

    Shapes:
        (B, C, H, W) → (B, (1 + len(kernel_sizes))·C, H, W).
    """

    def __init__(self, channels: int, depthwise: bool, kernel_sizes: Sequence[int] = (3, 5, 7),
                 dilation: int = 3) -> None:
        super().__init__()
        groups = channels if depthwise else 1

        def conv(kernel: int | tuple[int, int], dil: int = 1) -> ConvBNAct:
            return ConvBNAct(channels, channels, kernel, dilation=dil, groups=groups, nonlin=nn.ReLU6)

        self.branches = nn.ModuleList(
            [conv(1)] + [nn.Sequential(conv((1, k)), conv((k, 1)), conv(k, dilation)) for k in kernel_sizes])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


class MultiScaleGlobalPerceptionUnit(nn.Module):
    """Multi-scale Global Perception Unit (one EMCAD-style multi-scale convolution block, MSCB in the original).

    1×1 expansion C_in → e·C_in (BN, ReLU6) → ``MultiScaleDilatedConvs`` (concatenated) → 1×1 projection to
    C_out (BN, no activation) → + input (through a 1×1 convolution without bias when C_in ≠ C_out).

    Args:
        in_channels: C_in.
        out_channels: C_out.
        depthwise: depthwise branch convolutions (light variant) instead of ordinary ones (published).
        expansion: e.

    Shapes:
        (B, C_in, H, W) → (B, C_out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, depthwise: bool, expansion: int = 6) -> None:
        super().__init__()
        expanded = in_channels * expansion
        self.expand = ConvBNAct(in_channels, expanded, 1, nonlin=nn.ReLU6)
        self.branches = MultiScaleDilatedConvs(expanded, depthwise)
        self.project = ConvBNAct(len(self.branches.branches) * expanded, out_channels, 1, nonlin=None)
        self.shortcut = (nn.Identity() if in_channels == out_channels else
                         nn.Conv2d(in_channels, out_channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.branches(self.expand(x))) + self.shortcut(x)


class FeatureExplorationModule(nn.Module):
    """Feature Exploration Module (FEM) on the stride-4 encoder map.

    L-CAM (CBAM channel attention, reduction 16, no biases) → L-SAM (CBAM spatial attention, 7×7, mean before
    max) → Multi-scale Global Perception Unit → bilinear resize to half size (align_corners=True), giving the
    stride-8 ``x_low``.

    Args:
        in_channels: channels of the stride-4 map.
        out_channels: channels of ``x_low`` (the decoder width).
        depthwise: light variant (depthwise branch convolutions).

    Shapes:
        (B, in_channels, H, W) with even H, W → (B, out_channels, H/2, W/2).
    """

    def __init__(self, in_channels: int, out_channels: int, depthwise: bool) -> None:
        super().__init__()
        self.channel_attention = ChannelGate(in_channels, reduction=16, pools=("avg", "max"), bias=False)
        self.spatial_attention = SpatialAttentionMap(nn.Conv2d, 7, mean_first=True)
        self.perception = MultiScaleGlobalPerceptionUnit(in_channels, out_channels, depthwise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.channel_attention(x)
        x = self.perception(x * self.spatial_attention(x))
        return F.interpolate(x, size=(x.shape[2] // 2, x.shape[3] // 2), mode="bilinear", align_corners=True)


def group_gated_attention(channels: int) -> AttentionGate:
    """Group Gated Attention (GGA) of the decoder, as instantiated there (kernel 3, one group).

    ψ = sigmoid(BN(1×1 conv(ReLU(BN(3×3 conv(gate)) + BN(3×3 conv(feature)))))); out = feature · ψ, all
    convolutions with bias: ``AttentionGate`` with 3×3 θ/φ, BatchNorm and ReLU. Call it as ``gga(feature, gate)``.
    """
    return AttentionGate(nn.Conv2d, channels, channels, channels, bias=True, kernel_size=3,
                         norm_op=nn.BatchNorm2d, nonlin=nn.ReLU)


def _upsample2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class LargeKernelGatedCascade(nn.Module):
    """Large-Kernel Gated Cascade Module (LK-GCM) of the decoder.

    With up = bilinear ×2 (align_corners=True) and every conv a ``ConvBNAct`` C→C:

        a = conv3(up(fx)); b = conv5(up(fy)); c = conv7(fz)
        f_low  = conv3(GGA(feature = conv3(up(fx)), gate = a))              stride 16
        f_high = conv3(conv3(GGA(feature = conv3(up(f_low)), gate = b ⊙ c)))  stride 8

    Args:
        channels: C.

    Shapes:
        fx (B, C, H/32, W/32), fy (B, C, H/16, W/16), fz (B, C, H/8, W/8) → (f_high at H/8, f_low at H/16).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gate_deep = ConvBNAct(channels, channels, 3)
        self.gate_middle = ConvBNAct(channels, channels, 5)
        self.gate_shallow = ConvBNAct(channels, channels, 7)
        self.feature_low = ConvBNAct(channels, channels, 3)
        self.feature_high = ConvBNAct(channels, channels, 3)
        self.refine_low = ConvBNAct(channels, channels, 3)
        self.refine_high = ConvBNAct(channels, channels, 3)
        self.out = ConvBNAct(channels, channels, 3)
        self.gga_low = group_gated_attention(channels)
        self.gga_high = group_gated_attention(channels)

    def forward(self, fx: torch.Tensor, fy: torch.Tensor, fz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fx_up = _upsample2(fx)
        f_low = self.refine_low(self.gga_low(self.feature_low(fx_up), self.gate_deep(fx_up)))
        fused = self.gate_middle(_upsample2(fy)) * self.gate_shallow(fz)
        f_high = self.refine_high(self.gga_high(self.feature_high(_upsample2(f_low)), fused))
        return self.out(f_high), f_low


class MultiScaleFeatureAggregationDecoder(nn.Module):
    """Multi-scale Feature Aggregation Decoder (MFAD) with the deep-supervision heads of this implementation.

    1×1 ``ConvBNAct`` projections of the stride-8/16/32 encoder maps to C channels (fz, fy, fx) →
    ``LargeKernelGatedCascade`` → ``x_high`` (stride 8). With ``deep_supervision`` on, two 1×1 heads (bias) give
    logits on ``x_high`` (stride 8) and on the cascade's first level (stride 16).

    Args:
        encoder_channels: channels of the stride-8, 16 and 32 encoder maps.
        channels: C, the decoder width.
        num_classes: output channels of the deep-supervision heads.
        deep_supervision: whether ``forward`` returns the auxiliary logits; nnU-Net switches this attribute at run
            time (``set_deep_supervision_enabled``); the heads always exist.

    Shapes:
        maps at strides 8/16/32 → (x_high (B, C, H/8, W/8), [logits at H/8, logits at H/16] or None).
    """

    def __init__(self, encoder_channels: Sequence[int], channels: int, num_classes: int,
                 deep_supervision: bool) -> None:
        super().__init__()
        self.deep_supervision = deep_supervision
        self.projections = nn.ModuleList(ConvBNAct(c, channels, 1) for c in encoder_channels)
        self.cascade = LargeKernelGatedCascade(channels)
        self.aux_heads = nn.ModuleList(nn.Conv2d(channels, num_classes, 1) for _ in DEEP_SUPERVISION_STRIDES[1:])

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        fz, fy, fx = (projection(f) for projection, f in zip(self.projections, features))
        x_high, f_low = self.cascade(fx, fy, fz)
        if not self.deep_supervision:
            return x_high, None
        return x_high, [head(level) for head, level in zip(self.aux_heads, (x_high, f_low))]


def _init_normal(module: nn.Module) -> None:
    """The original's re-initialisation of its attention and multi-scale blocks: convolution and linear weights
    normal(0, 0.02), biases 0, BatchNorm (1, 0)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ---- the networks --------------------------------------------------------------------------------------------

class RccSegmentor(nn.Module):
    """RccSegmentor as published: PVTv2 encoder, Feature Exploration Module, Multi-scale Feature Aggregation Decoder.

    Topology (defaults): timm's ``pvt_v2_b2`` (stochastic depth 0.1, as the original) → maps X1..X4 with
    64/128/320/512 channels at strides 4/8/16/32. X1 → ``FeatureExplorationModule`` (L-CAM, L-SAM, Multi-scale
    Global Perception Unit with expansion 6 and full 384-channel 1×k / k×1 / dilated k×k convolutions,
    k = 3, 5, 7) → ``x_low`` (64 channels, stride 8). X2..X4 → ``MultiScaleFeatureAggregationDecoder`` (width 64,
    LK-GCM with 3/5/7 kernels and two group gated attentions) → ``x_high`` (stride 8). Head: 1×1 conv (bias) on
    ``x_low + x_high`` → bilinear upsampling (align_corners=False) to the input size. The attention and
    multi-scale blocks are initialised normal(0, 0.02) as in the original; the encoder as timm does.

    Papers: Zhang et al. 2025 (RccSegmentor); Wang et al. 2022 (PVTv2); Woo et al. 2018 (CBAM); Rahman et al. 2024
    (EMCAD).

    The published FEM is expensive: 92 % of the MACs at 352² sit in its 384-channel convolutions at stride 4. The
    paper reports 4.46 GFLOPs, which is what the encoder and decoder alone cost at 224² (the FEM adds 53 GMAC
    there). ``RccSegmentorLight`` is the variant with depthwise FEM convolutions; this class follows the code.

    Args:
        input_channels: channels of the input slices (any count; timm's ``in_chans``).
        num_classes: output channels (logits).
        deep_supervision: initial value of ``self.decoder.deep_supervision`` (read at call time).
        backbone: timm PVTv2 variant, ``pvt_v2_b0`` ... ``pvt_v2_b5`` (the original: ``pvt_v2_b2``).
        decoder_channels: width of the FEM output and of the decoder (the original's ``channel``, 64).
        depthwise_fem: depthwise convolutions in the FEM's multi-scale branches (the light variant).
        drop_path_rate: stochastic depth of the encoder.
        pretrained_weights: path of a local ImageNet PVTv2 checkpoint of the same ``backbone`` to start the
            encoder from (see ``load_pvt_v2_weights``); None: random initialisation, as the original's default.
            Nothing is downloaded.
        activation_checkpointing: recompute the Feature Exploration Module in the backward pass instead of keeping
            its activations (``torch.utils.checkpoint``; only in training with gradients on; no state-dict
            change).

    Shapes:
        input (B, input_channels, H, W), any H, W (zero-padded at the end to multiples of 32, outputs cropped).
        ``decoder.deep_supervision`` False → logits (B, num_classes, H, W).
        ``decoder.deep_supervision`` True → [(B, K, H, W), (B, K, ⌈H/8⌉, ⌈W/8⌉), (B, K, ⌈H/16⌉, ⌈W/16⌉)]: the main
        output, then the heads on the aggregated decoder map and on the first cascade level, at their native
        resolutions (nnU-Net downsamples the targets; ``deep_supervision_scales`` gives the scales).

    Measured (``count_parameters``/``count_macs``, input 1×352×352, one output channel, heads included):
        42,521,323 parameters (published model with a 1-channel stem 42,521,193; with its 3-channel stem it has
        42,527,465) and 142.60 GMAC (published 142.60): identical layers plus the two 65-parameter deep-supervision
        heads. At 1×512×512: 303.76 GMAC (published 303.76).
        python -c "from nnunet_ext.architectures import RccSegmentor as N;
        from nnunet_ext.architectures.profiling import count_macs, count_parameters;
        n = N(1, 1); print(count_parameters(n), count_macs(n, (1, 1, 352, 352)))"

    Fidelity: ``convert_original_state_dict`` loads the original's weights into ``RccSegmentor(3, 1)``. With the
    original's random weights (every parameter and BatchNorm statistic), eval mode, input 3×352×352, our output
    differs from the original code's by at most 5.6e-7 of the largest output (float rounding). Deliberate
    differences from the original and their effect on its outputs:
      * the two deep-supervision heads (``decoder.aux_heads``, the only keys the original lacks): none, they
        only add outputs when ``decoder.deep_supervision`` is on;
      * input channels and classes are arguments (the original: 3 and 1): none at (3, 1);
      * timm's PVTv2 instead of the original's copy, and L-CAM's 1×1 convolutions as linear layers: none (same
        tensors, renamed and reshaped by the converter);
      * zero-padding to multiples of 32: none at multiples of 32. The original also runs sizes 1-3 below a
        multiple of 32 (its stride-4 map rounds up) and fails at all others; at those sizes ours pads, which
        changes the outputs everywhere (the encoder's attention is global): at 350×350 by up to 21 % of the
        largest output (9 % at least 32 pixels from the padded edge, 1.2 % on average).
    """

    depthwise_fem_default = False

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False,
                 backbone: str = "pvt_v2_b2", decoder_channels: int = 64, depthwise_fem: bool | None = None,
                 drop_path_rate: float = 0.1, pretrained_weights: str | os.PathLike | None = None,
                 activation_checkpointing: bool = False) -> None:
        super().__init__()
        if depthwise_fem is None:
            depthwise_fem = self.depthwise_fem_default
        self.backbone_variant = backbone
        self.encoder = create_pvt_v2_encoder(backbone, input_channels, drop_path_rate)
        channels = self.encoder.feature_info.channels()
        self.fem = FeatureExplorationModule(channels[0], decoder_channels, depthwise_fem)
        self.decoder = MultiScaleFeatureAggregationDecoder(channels[1:], decoder_channels, num_classes,
                                                           deep_supervision)
        self.head = nn.Conv2d(decoder_channels, num_classes, 1)
        self.activation_checkpointing = activation_checkpointing
        _init_normal(self.fem)
        _init_normal(self.decoder.cascade.gga_low)
        _init_normal(self.decoder.cascade.gga_high)
        if pretrained_weights is not None:
            self.load_pretrained_encoder(pretrained_weights)

    def load_pretrained_encoder(self, path: str | os.PathLike) -> int:
        """Load a local ImageNet PVTv2 checkpoint into the encoder (see ``load_pvt_v2_weights``); returns the
        number of tensors loaded."""
        return load_pvt_v2_weights(self.encoder, path, self.backbone_variant)

    @staticmethod
    def padded_input_size(size: Sequence[int]) -> list[int]:
        """The spatial size the layers process for an input of ``size``: each axis rounded up to a multiple of 32."""
        return round_up_to_multiple(size, TOTAL_STRIDE)

    @staticmethod
    def deep_supervision_scales(patch_size: Sequence[int]) -> list[list[float]]:
        """Per-output scales of the deep-supervision outputs relative to ``patch_size``, full resolution first.

        nnU-Net resizes targets to ``round(size * scale)``; these scales reproduce the output sizes exactly
        (1/8 and 1/16 per axis whenever the axis is divisible by 16; ⌈size / stride⌉ / size otherwise).
        """
        return deep_supervision_scales(patch_size, DEEP_SUPERVISION_STRIDES)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        size = list(x.shape[2:])
        padded = self.padded_input_size(size)
        features = self.encoder(pad_to_size(x, padded))
        x_high, aux = self.decoder(features[1:])
        x_low = checkpointed(self.fem, features[0], enabled=self.activation_checkpointing and self.training)
        logits = self.head(x_low + x_high)
        logits = crop_to_size(F.interpolate(logits, size=padded, mode="bilinear", align_corners=False), size)
        if aux is None:
            return logits
        strides = DEEP_SUPERVISION_STRIDES[1:]
        return [logits, *(crop_to_size(a, downsampled_size(size, s)) for a, s in zip(aux, strides))]


class RccSegmentorLight(RccSegmentor):
    """RccSegmentor with depthwise convolutions in the FEM's multi-scale branches; everything else as published.

    Every convolution of the four multi-scale branches (1×1, 1×k, k×1, dilated k×k on 384 channels) is depthwise,
    as in the EMCAD multi-scale block the FEM derives from; the FEM's 1×1 expansion and projection stay. This
    brings the cost close to what the paper reports for the whole model (4.46 GFLOPs; with this FEM 4.96 GMAC at
    224², the FEM 0.5 of it).
    Same arguments and outputs as ``RccSegmentor`` (``depthwise_fem`` defaults to True).

    Measured (input 1×352×352, one output channel, heads included): 25,755,115 parameters and 12.77 GMAC
    (FEM 175,842 parameters and 1.29 GMAC, against 16.9 M and 131.1 GMAC published); 29.06 GMAC at 512².
    """

    depthwise_fem_default = True


# ---- the original's weights ------------------------------------------------------------------------------------

def _conv_bn_rules(original: str, ours: str, conv: str = "conv", bn: str = "bn") -> list[RenameRule]:
    """Rules for a convolution (no bias) + BatchNorm pair, from ``original.{conv,bn}`` to ``ours.{conv,norm}``."""
    return [(rf"{re.escape(original)}\.{conv}\.weight", f"{ours}.conv.weight"),
            (rf"{re.escape(original)}\.{bn}\.{BATCH_NORM_ENTRIES}", rf"{ours}.norm.\1")]


def _original_rccsegmentor_rules() -> list[RenameRule]:
    """The original ``RccSegmentor(channel=64)`` (model.py with pvtv2.py's ``pvt_v2_b2``) → ours, key by key."""
    rules: list[RenameRule] = [
        (r"backbone\.patch_embed1\.(proj|norm)\.(weight|bias)", r"encoder.patch_embed.\1.\2")]
    for stage in range(1, 5):
        ours = f"encoder.stages_{stage - 1}"
        if stage > 1:
            rules.append((rf"backbone\.patch_embed{stage}\.(proj|norm)\.(weight|bias)",
                          rf"{ours}.downsample.\1.\2"))
        rules += [(rf"backbone\.block{stage}\.(\d+)\.mlp\.dwconv\.dwconv\.(weight|bias)",
                   rf"{ours}.blocks.\1.mlp.dwconv.\2"),
                  (rf"backbone\.block{stage}\.(\d+)\.((?:norm[12]|attn\.(?:q|kv|proj|sr|norm)|mlp\.fc[12])"
                   rf"\.(?:weight|bias))", rf"{ours}.blocks.\1.\2"),
                  (rf"backbone\.norm{stage}\.(weight|bias)", rf"{ours}.norm.\1")]
    fem = "fe_module.mgpu.0"
    rules += [(r"fe_module\.l_cam\.conv1\.weight", "fem.channel_attention.mlp.0.weight"),
              (r"fe_module\.l_cam\.conv2\.weight", "fem.channel_attention.mlp.2.weight"),
              (r"fe_module\.l_sam\.conv\.weight", "fem.spatial_attention.conv.weight"),
              *_conv_bn_rules(f"{fem}.pconv1", "fem.perception.expand", "0", "1"),
              *_conv_bn_rules(f"{fem}.msdc.branch1", "fem.perception.branches.branches.0", "0", "1"),
              *_conv_bn_rules(f"{fem}.pconv2", "fem.perception.project", "0", "1")]
    for branch in range(2, 5):  # Sequential(conv, BN, ReLU6) × 3: conv at 3j, BN at 3j + 1
        for j in range(3):
            ours = f"fem.perception.branches.branches.{branch - 1}.{j}"
            rules += _conv_bn_rules(f"{fem}.msdc.branch{branch}", ours, str(3 * j), str(3 * j + 1))
    for level, original in enumerate(("trans2", "trans3", "trans4")):
        rules += _conv_bn_rules(f"decoder.{original}", f"decoder.projections.{level}")
    cascade = {"conv_fx": "gate_deep", "conv_fy": "gate_middle", "conv_fz": "gate_shallow",
               "conv_aux1": "feature_low", "conv_aux2": "feature_high", "conv_concat1": "refine_low",
               "conv_concat2": "refine_high", "conv_out": "out"}
    for original, ours in cascade.items():
        rules += _conv_bn_rules(f"decoder.lk_gcm.{original}", f"decoder.cascade.{ours}")
    # LGAG(g, x) gates x: W_x acts on the gated feature (our θ on the skip), W_g on the gate (our φ)
    for original, ours in (("gga1", "gga_low"), ("gga2", "gga_high")):
        for branch, name in (("W_x", "theta"), ("W_g", "phi"), ("psi", "psi")):
            rules += [(rf"decoder\.lk_gcm\.{original}\.{branch}\.0\.(weight|bias)",
                       rf"decoder.cascade.{ours}.{name}.\1"),
                      (rf"decoder\.lk_gcm\.{original}\.{branch}\.1\.{BATCH_NORM_ENTRIES}",
                       rf"decoder.cascade.{ours}.{name}_norm.\1")]
    return rules + [(r"pred_head\.(weight|bias)", r"head.\1")]


def convert_original_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict of the original RccSegmentor (github.com/Mr-AlbertZhang/RccSegmentor, ``model.py``,
    ``RccSegmentor(channel=64)`` with its ``pvt_v2_b2``) as one of ``RccSegmentor(3, 1)``.

    Names follow a table of rules, one per original layer; the L-CAM's 1×1 convolutions become the linear layers
    of ``ChannelGate`` (weights reshaped (R, C, 1, 1) → (R, C)). Load the result with ``strict=False``: the only
    missing keys are our deep-supervision heads (``decoder.aux_heads.*``), which the original lacks.

    Raises:
        KeyError: a key of the original that has no counterpart here (naming it).
    """
    converted = rename_keys(state_dict, _original_rccsegmentor_rules(), "RccSegmentor")
    for key in ("fem.channel_attention.mlp.0.weight", "fem.channel_attention.mlp.2.weight"):
        if key in converted:
            converted[key] = converted[key].flatten(1)
    return converted
