"""SegFormer3D variant of the PANTHER 2025 challenge (pancreatic tumour segmentation in MRI, Task 1, 4th place).

Papers:
    Perera, Navard & Yilmaz, "SegFormer3D: an Efficient Transformer for 3D Medical Image Segmentation",
        CVPR Workshops 2024 (arXiv 2023) -- the 3D Mix-Transformer encoder.
    Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with Transformers", NeurIPS 2021
        -- efficient self-attention with spatial reduction, Mix-FFN, overlapping patch embeddings.
    Kolpetinou, PANTHER Challenge (MICCAI 2025, Task 1) -- the variant: hybrid convolutional stem, ASPP + FPN
        decoder with scSE and attention gates on the skips, depthwise-separable smoothing, auxiliary head
        (github.com/KyriakiKolpetinou/PancreasTumorSegmentation, models/segformer3d_variant.py).

Re-implemented from a written description of that model: the same parameter tensors (names are our own) and the
same function, except for the order in which the fuse layer concatenates the pyramid: [P1, P2, P3, P4] here,
[P4, P3, P2, P1] in the original, so the original's fuse weight needs its input-channel blocks reversed
(``convert_original_state_dict`` does it; loaded unconverted, the original's weights give wrong outputs). The
computation differs otherwise only where the result is mathematically identical:
  * attention uses ``F.scaled_dot_product_attention`` instead of an explicit score matrix;
  * tokens keep one memory layout; convolutions work on channels-last views of them, and the decoder stays
    channels-last (instance norm via the group-norm kernel, which keeps that layout);
  * the attention gates resize φ(gate) instead of the gate (a 1×1 convolution without bias commutes with
    interpolation);
  * on CPU, the depthwise convolutions' backward pass is built from forward convolutions (``blocks.depthwise``).
One addition: inputs with an axis too short for the layers (the original needs ≥ 7 per axis) are zero-padded
internally and the outputs cropped back, so nnU-Net's sliding window can never crash on them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.functional import scaled_dot_product_attention

from .blocks import ASPP, SCSE, AttentionGate, DepthwiseSeparableConv, InstanceNorm, depthwise_conv
from .blocks.checkpointing import checkpointed
from .blocks.ops import crop_to_size, deep_supervision_scales, downsampled_size, pad_to_size
from .weight_conversion import BATCH_NORM_ENTRIES, RenameRule, rename_keys

Size3D = tuple[int, int, int]
DEFAULT_SR_RATIOS = (4, 2, 1, 1)


def _tokens_to_volume(tokens: torch.Tensor, size: Size3D) -> torch.Tensor:
    """(B, N, C) tokens → (B, C, D, H, W) view in channels-last memory order (no copy)."""
    return tokens.view(tokens.shape[0], *size, tokens.shape[2]).permute(0, 4, 1, 2, 3)


def _volume_to_tokens(volume: torch.Tensor) -> torch.Tensor:
    """(B, C, D, H, W) → (B, N, C) tokens; a view when the volume is channels-last in memory."""
    return volume.permute(0, 2, 3, 4, 1).flatten(1, 3)


class HybridConvStem(nn.Module):
    """Convolutional stem of the variant, replacing SegFormer3D's 7³/stride-4 patch embedding.

    3×3×3 conv (C_in → C/2, bias) → BatchNorm3d → GELU → 3×3×3 conv stride 2 (C/2 → C, bias) → BatchNorm3d →
    GELU → LayerNorm over channels.

    Args:
        in_channels: C_in.
        embed_dim: C.

    Shapes:
        input (B, C_in, D, H, W) → tokens (B, N, C) with N = ∏ ceil(size / 2), and that size.
    """

    def __init__(self, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        hidden = embed_dim // 2
        self.conv1 = nn.Conv3d(in_channels, hidden, 3, padding=1)
        self.bn1 = nn.BatchNorm3d(hidden)
        self.conv2 = nn.Conv3d(hidden, embed_dim, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm3d(embed_dim)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Size3D]:
        # channels-last from the first feature map on: the tokens are channels-last, and a convolution whose
        # input and gradient layouts differ pays a layout copy of its full-resolution input in the backward pass
        x = self.conv1(x).contiguous(memory_format=torch.channels_last_3d)
        x = self.act(self.bn2(self.conv2(self.act(self.bn1(x)))))
        return self.norm(_volume_to_tokens(x)), tuple(x.shape[2:])


class OverlapPatchEmbed(nn.Module):
    """Overlapping patch embedding (SegFormer): 3×3×3 conv, stride 2, padding 1 → LayerNorm over channels.

    Args:
        in_channels: channels of the previous stage.
        embed_dim: channels of this stage.

    Shapes:
        input (B, C_in, D, H, W) → tokens (B, N, embed_dim) with N = ∏ ceil(size / 2), and that size.
    """

    def __init__(self, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_channels, embed_dim, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Size3D]:
        x = self.proj(x)
        return self.norm(_volume_to_tokens(x)), tuple(x.shape[2:])


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention with spatial reduction of keys and values (SegFormer / PVT).

    Queries come from all N tokens; keys and values from the token map reduced by a Conv3d with
    kernel = stride = ``sr_ratio`` followed by LayerNorm (when ``sr_ratio`` > 1). Scale head_dim^-0.5, no dropout.
    Computed with ``F.scaled_dot_product_attention`` (no N × M score matrix is stored).

    Args:
        dim: C, token channels.
        num_heads: attention heads (C must be divisible by it).
        sr_ratio: spatial-reduction ratio of keys/values.

    Shapes:
        tokens (B, N, C) and their (D, H, W) with N = D·H·W → (B, N, C).
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv3d(dim, dim, sr_ratio, stride=sr_ratio)
            self.sr_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, size: Size3D) -> torch.Tensor:
        batch, tokens, channels = x.shape
        heads, head_dim = self.num_heads, channels // self.num_heads
        if self.sr_ratio > 1:
            reduced = self.sr_norm(_volume_to_tokens(self.sr(_tokens_to_volume(x, size))))
            q = self.q(x)
            kv = self.kv(reduced)
        else:
            # keys and values come from the same tokens as the queries: one GEMM instead of two
            qkv = F.linear(x, torch.cat((self.q.weight, self.kv.weight)), torch.cat((self.q.bias, self.kv.bias)))
            q, kv = qkv.split((channels, 2 * channels), dim=-1)
        q = q.view(batch, tokens, heads, head_dim).transpose(1, 2)
        k, v = kv.view(batch, kv.shape[1], 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, channels))


class MixFFN(nn.Module):
    """Mix-FFN of the variant: Linear C→rC → depthwise 3×3×3 Conv3d (bias) → BatchNorm3d → GELU → Linear rC→C.

    Args:
        dim: C.
        mlp_ratio: r.

    Shapes:
        tokens (B, N, C) and their (D, H, W) → (B, N, C).
    """

    def __init__(self, dim: int, mlp_ratio: int) -> None:
        super().__init__()
        hidden = dim * mlp_ratio
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv3d(hidden, hidden, 3, padding=1, groups=hidden)
        self.bn = nn.BatchNorm3d(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, size: Size3D) -> torch.Tensor:
        hidden = self.act(self.bn(depthwise_conv(self.dwconv, _tokens_to_volume(self.fc1(x), size))))
        return self.fc2(_volume_to_tokens(hidden))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + Attention(LN(x)), then x + MixFFN(LN(x)). No dropout or drop-path.

    Args:
        dim: C.
        num_heads: attention heads.
        sr_ratio: spatial-reduction ratio of keys/values.
        mlp_ratio: expansion of the Mix-FFN.

    Shapes:
        tokens (B, N, C) and their (D, H, W) → (B, N, C).
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MixFFN(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, size: Size3D) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), size)
        return x + self.mlp(self.norm2(x), size)


class MixVisionTransformer3D(nn.Module):
    """Hierarchical 3D Mix-Transformer encoder with the variant's hybrid stem (strides 2, 4, 8, 16).

    Stage 1 embeds with ``HybridConvStem``, later stages with ``OverlapPatchEmbed``; each stage runs its
    transformer blocks and ends with a LayerNorm.

    Args:
        in_channels: input channels.
        embed_dims, depths, num_heads, sr_ratios: per stage.
        mlp_ratio: Mix-FFN expansion (all stages).

    ``activation_checkpointing`` (attribute, default False, set by ``SegFormer3DVariant``): recompute each
    transformer block in the backward pass.

    Shapes:
        input (B, C_in, D, H, W) → list of (B, embed_dims[i], *ceil(size / 2^(i+1))), channels-last in memory.
    """

    activation_checkpointing = False

    def __init__(self, in_channels: int, embed_dims: Sequence[int], depths: Sequence[int],
                 num_heads: Sequence[int], sr_ratios: Sequence[int], mlp_ratio: int) -> None:
        super().__init__()
        self.patch_embeds = nn.ModuleList(
            [HybridConvStem(in_channels, embed_dims[0])]
            + [OverlapPatchEmbed(embed_dims[i - 1], embed_dims[i]) for i in range(1, len(embed_dims))])
        self.stages = nn.ModuleList(
            nn.ModuleList(TransformerBlock(dim, heads, sr, mlp_ratio) for _ in range(depth))
            for dim, depth, heads, sr in zip(embed_dims, depths, num_heads, sr_ratios))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for dim in embed_dims)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for embed, blocks, norm in zip(self.patch_embeds, self.stages, self.norms):
            tokens, size = embed(x)
            for block in blocks:
                tokens = checkpointed(block, tokens, size, enabled=self.activation_checkpointing and self.training)
            x = _tokens_to_volume(norm(tokens), size)
            features.append(x)
        return features


class ASPPFPNDecoder(nn.Module):
    """ASPP + FPN decoder of the variant, with scSE and attention gates on the skips and two heads.

    P4 = ASPP(c4); for k = 3, 2, 1: s = AttentionGate(scSE(c_k), gate = P_{k+1});
    P_k = DWSeparable(resize(P_{k+1}) + 1×1 conv(s)) with InstanceNorm + GELU. Main head ("fuse all"):
    concat(P1, resize(P2), resize(P3), resize(P4)) → 1×1 conv → InstanceNorm → GELU → 1×1 conv → classes.
    Auxiliary head: 1×1 conv on P2. All resizing is trilinear, align_corners=False; instance norms are not
    affine.

    Args:
        encoder_channels: channels of c1..c4.
        num_classes: output channels of both heads.
        channels: decoder width.
        aspp_rates: dilation rates of the ASPP.
        deep_supervision: whether ``forward`` also returns the auxiliary logits. nnU-Net switches this attribute
            at run time (``set_deep_supervision_enabled``); both heads always exist.

    Shapes:
        c1..c4 at strides 2/4/8/16 → (main logits at c1's size, aux logits at c2's size or None).
    """

    def __init__(self, encoder_channels: Sequence[int], num_classes: int, channels: int,
                 aspp_rates: Sequence[int], deep_supervision: bool) -> None:
        super().__init__()
        self.deep_supervision = deep_supervision
        skip_channels = encoder_channels[:-1]
        self.aspp = ASPP(nn.Conv3d, encoder_channels[-1], channels, aspp_rates, norm_op=InstanceNorm,
                         nonlin=nn.GELU)
        self.skip_scse = nn.ModuleList(SCSE(nn.Conv3d, c, reduction=8, min_channels=8, nonlin=nn.GELU)
                                       for c in skip_channels)
        self.skip_gates = nn.ModuleList(AttentionGate(nn.Conv3d, c, channels, max(channels // 2, 32), nonlin=nn.GELU)
                                        for c in skip_channels)
        self.laterals = nn.ModuleList(nn.Conv3d(c, channels, 1, bias=False) for c in skip_channels)
        self.smooth = nn.ModuleList(
            DepthwiseSeparableConv(nn.Conv3d, channels, channels, 3, norm_op=InstanceNorm, nonlin=nn.GELU)
            for _ in skip_channels)
        self.fuse = nn.Sequential(nn.Conv3d(len(encoder_channels) * channels, channels, 1, bias=False),
                                  InstanceNorm(channels), nn.GELU())
        self.head = nn.Conv3d(channels, num_classes, 1)
        self.aux_head = nn.Conv3d(channels, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        # the encoder features are channels-last views of its tokens; keeping the whole decoder in that layout
        # avoids layout copies and the slow mixed-layout path of depthwise convolutions on CPU
        pyramid = [self.aspp(features[-1]).contiguous(memory_format=torch.channels_last_3d)]
        for level in reversed(range(len(features) - 1)):
            coarser = pyramid[0]
            skip = self.skip_gates[level](self.skip_scse[level](features[level]), coarser)
            merged = _resize(coarser, skip.shape[2:]) + self.laterals[level](skip)
            pyramid.insert(0, self.smooth[level](merged))
        finest = pyramid[0]
        fused = self.fuse(torch.cat([finest] + [_resize(p, finest.shape[2:]) for p in pyramid[1:]], dim=1))
        aux = self.aux_head(pyramid[1]) if self.deep_supervision else None
        return self.head(fused), aux


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="trilinear", align_corners=False)


class SegFormer3DVariant(nn.Module):
    """SegFormer3D variant (PANTHER 2025): Mix-Transformer encoder with a hybrid conv stem, ASPP + FPN decoder.

    Topology (defaults): hybrid stem to 1/2 resolution (conv-BN-GELU ×2, LayerNorm); four transformer stages at
    strides 2/4/8/16 with 32/64/160/256 channels, 2 blocks each, 1/2/5/8 heads, key/value spatial reduction
    4/2/1/1, Mix-FFN ratio 4 (depthwise conv + BatchNorm3d + GELU); decoder of width 128 with ASPP (rates 1/2/3)
    on stage 4, scSE and attention gates on the skips, depthwise-separable smoothing (InstanceNorm + GELU),
    a fuse-all main head at stride 2 and an auxiliary head on P2 (stride 4).

    Papers: Perera et al. 2023 (SegFormer3D); Xie et al. 2021 (SegFormer); Kolpetinou, PANTHER 2025 (variant).

    Args:
        input_channels: channels of the input image (any count).
        num_classes: output channels (logits).
        deep_supervision: initial value of ``self.decoder.deep_supervision`` (read at call time).
        embed_dims, depths, num_heads, sr_ratios: per encoder stage.
        mlp_ratio: Mix-FFN expansion.
        decoder_channels: decoder width.
        aspp_rates: ASPP dilation rates.
        activation_checkpointing: recompute each transformer block in the backward pass instead of keeping
            its activations (``torch.utils.checkpoint``; only in training with gradients on; no state-dict
            change). Costs about one more forward of the encoder's blocks, saves most of their memory.

    Shapes:
        input (B, input_channels, D, H, W), any D, H, W.
        ``decoder.deep_supervision`` False → logits (B, num_classes, D, H, W) (main head, trilinear
        align_corners=False upsampling from stride 2).
        ``decoder.deep_supervision`` True → [main (B, K, D, H, W), aux (B, K, ceil(D/4), ceil(H/4), ceil(W/4))];
        the auxiliary logits stay at the native stride-4 resolution of P2 (nnU-Net downsamples the targets).
        An axis shorter than ``minimum_axis_size()`` (7 with the default SR ratios) is zero-padded at its end, and
        so is the last axis when the stride-16 map would hold a single position (instance norm needs two), see
        ``padded_input_size``; outputs are cropped back, so they always have the sizes above.

    Measured at input 1×32×160×208, 1 channel, 3 classes (the original measures 4,769,488 parameters, 72.94 GMAC):
        4,769,488 parameters (identical); 71.84 GMAC counting convolutions, linear layers and the attention
        matmuls (-1.5 %: the attention gates apply φ at the gate's resolution, 1.1 GMAC less for the same result).
        python -c "from nnunet_ext.architectures import SegFormer3DVariant as N;
        from nnunet_ext.architectures.profiling import count_macs, count_parameters;
        n = N(1, 3); print(count_parameters(n), count_macs(n, (1, 1, 32, 160, 208)))"

    Fidelity: ``convert_original_state_dict`` loads the original's weights (``SegFormer3D`` of
    models/segformer3d_variant.py) into a ``SegFormer3DVariant`` with the same input channels and classes. With
    random weights (every parameter and BatchNorm statistic), eval mode, input 1×32×160×208, 3 classes, our main
    output differs from the original code's by at most 1.8e-6 of the largest output, the auxiliary one (upsampled
    as the original does) by 1.5e-6: float rounding. Deliberate differences and their effect on the outputs:
      * fuse order [P1..P4] instead of [P4..P1]: none once converted (the converter reverses the weight's input
        blocks; without that the main output differs by 115 % of its largest value);
      * the auxiliary logits stay at stride 4 (the original upsamples them trilinearly to the input size; nnU-Net
        downsamples the targets instead): the same values once upsampled;
      * attention by ``F.scaled_dot_product_attention``, channels-last layouts, φ resized instead of the gate in
        the attention gates: rounding only (included in the figures above);
      * padding of axes too short for the layers: none where the original runs (it fails on such inputs).
    """

    deep_supervision_strides: tuple[int, ...] = (1, 4)

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False,
                 embed_dims: Sequence[int] = (32, 64, 160, 256), depths: Sequence[int] = (2, 2, 2, 2),
                 num_heads: Sequence[int] = (1, 2, 5, 8), sr_ratios: Sequence[int] = DEFAULT_SR_RATIOS,
                 mlp_ratio: int = 4, decoder_channels: int = 128, aspp_rates: Sequence[int] = (1, 2, 3),
                 activation_checkpointing: bool = False) -> None:
        super().__init__()
        if not len(embed_dims) == len(depths) == len(num_heads) == len(sr_ratios):
            raise ValueError("embed_dims, depths, num_heads and sr_ratios need one entry per stage")
        self.encoder = MixVisionTransformer3D(input_channels, embed_dims, depths, num_heads, sr_ratios, mlp_ratio)
        self.encoder.activation_checkpointing = activation_checkpointing
        self.decoder = ASPPFPNDecoder(embed_dims, num_classes, decoder_channels, aspp_rates, deep_supervision)
        self.sr_ratios = tuple(sr_ratios)

    @staticmethod
    def minimum_axis_size(sr_ratios: Sequence[int] = DEFAULT_SR_RATIOS) -> int:
        """Shortest axis the layers take without padding (7 with the default SR ratios)."""
        # stage i works at stride 2^(i+1) on ceil-sized maps; its key/value reduction needs sr_ratio positions
        return max((sr - 1) * 2 ** (i + 1) + 1 for i, sr in enumerate(sr_ratios))

    @classmethod
    def padded_input_size(cls, size: Sequence[int], sr_ratios: Sequence[int] = DEFAULT_SR_RATIOS) -> list[int]:
        """The spatial size the layers process for an input of ``size`` (equal to ``size`` when no padding).

        Every axis is at least ``minimum_axis_size``; and when every axis fits into one position of the deepest
        stage (stride 2^stages), the last axis is extended so that instance and batch norms there see two.
        """
        total_stride = 2 ** len(sr_ratios)
        padded = [max(s, cls.minimum_axis_size(sr_ratios)) for s in size]
        if all(s <= total_stride for s in padded):
            padded[-1] = total_stride + 1
        return padded

    @classmethod
    def deep_supervision_scales(cls, patch_size: Sequence[int]) -> list[list[float]]:
        """Per-output scales of the deep-supervision outputs relative to ``patch_size``, full resolution first.

        nnU-Net resizes targets to ``round(size * scale)``; these scales reproduce the network's output sizes
        exactly (0.25 per axis whenever the axis is divisible by 4; ceil(size / 4) / size otherwise).
        """
        return deep_supervision_scales(patch_size, cls.deep_supervision_strides)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        size = list(x.shape[2:])
        padded = self.padded_input_size(size, self.sr_ratios)
        main, aux = self.decoder(self.encoder(pad_to_size(x, padded)))
        main = crop_to_size(F.interpolate(main, size=padded, mode="trilinear", align_corners=False), size)
        if not self.decoder.deep_supervision:
            return main
        return [main, crop_to_size(aux, downsampled_size(size, self.deep_supervision_strides[1]))]


# ---- the original's weights ------------------------------------------------------------------------------------

# layers of one original TransformerBlock → ours (patterns and replacements inside the block)
_BLOCK_LAYERS: tuple[RenameRule, ...] = (
    (r"norm(?P<n>[12])", r"norm\g<n>"),
    (r"attention\.(?P<linear>q|kv|proj|sr)", r"attn.\g<linear>"),
    (r"attention\.norm", "attn.sr_norm"),
    (r"mlp\.(?P<fc>fc[12])", r"mlp.\g<fc>"),
    (r"mlp\.dwconv\.dwconv", "mlp.dwconv"))


def _original_segformer3d_rules() -> list[RenameRule]:
    """The original ``SegFormer3D()`` (models/segformer3d_variant.py, default arguments) → ours, key by key."""
    stem = "encoder.patch_embeds.0"
    rules: list[RenameRule] = [
        (r"encoder\.embed_1\.stem\.0\.(weight|bias)", rf"{stem}.conv1.\1"),
        (rf"encoder\.embed_1\.stem\.1\.{BATCH_NORM_ENTRIES}", rf"{stem}.bn1.\1"),
        (r"encoder\.embed_1\.stem\.3\.(weight|bias)", rf"{stem}.conv2.\1"),
        (rf"encoder\.embed_1\.stem\.4\.{BATCH_NORM_ENTRIES}", rf"{stem}.bn2.\1"),
        (r"encoder\.embed_1\.norm\.(weight|bias)", rf"{stem}.norm.\1")]
    for stage in range(1, 5):
        ours = f"encoder.stages.{stage - 1}"
        if stage > 1:
            embed = f"encoder.patch_embeds.{stage - 1}"
            rules += [(rf"encoder\.embed_{stage}\.patch_embeddings\.(weight|bias)", rf"{embed}.proj.\1"),
                      (rf"encoder\.embed_{stage}\.norm\.(weight|bias)", rf"{embed}.norm.\1")]
        rules += [(rf"encoder\.tf_block{stage}\.(?P<block>\d+)\.{layer}\.(?P<entry>weight|bias)",
                   rf"{ours}.\g<block>.{renamed}.\g<entry>") for layer, renamed in _BLOCK_LAYERS]
        rules += [(rf"encoder\.tf_block{stage}\.(\d+)\.mlp\.dwconv\.bn\.{BATCH_NORM_ENTRIES}",
                   rf"{ours}.\1.mlp.bn.\2"),
                  (rf"encoder\.norm{stage}\.(weight|bias)", rf"encoder.norms.{stage - 1}.\1")]
    return rules + _original_decoder_rules()


def _original_decoder_rules() -> list[RenameRule]:
    """The original ``ASPPFPNDecoderHead`` (default arguments, ``fuse_all=True``) → our ``ASPPFPNDecoder``."""
    aspp = "decoder.aspp"
    rules: list[RenameRule] = [
        (r"decoder\.aspp\.branches\.0\.0\.weight", f"{aspp}.pointwise_branch.0.weight"),
        (r"decoder\.aspp\.pool_proj\.1\.weight", f"{aspp}.pooling_branch.0.weight"),
        (r"decoder\.aspp\.proj\.weight", f"{aspp}.projection.weight"),
        (r"decoder\.fuse\.0\.weight", "decoder.fuse.0.weight"),
        (r"decoder\.cls\.(weight|bias)", r"decoder.head.\1"),
        (r"decoder\.cls_aux\.(weight|bias)", r"decoder.aux_head.\1")]
    for rate in range(1, 4):
        branch = f"{aspp}.atrous_branches.{rate - 1}"
        rules += [(rf"decoder\.aspp\.branches\.{rate}\.0\.dw\.weight", f"{branch}.0.depthwise.weight"),
                  (rf"decoder\.aspp\.branches\.{rate}\.0\.pw\.weight", f"{branch}.0.pointwise.weight"),
                  (rf"decoder\.aspp\.branches\.{rate}\.1\.weight", f"{branch}.1.0.weight")]
    for level in range(1, 4):  # cam/ag/lat/smooth k act on c_k; ours are indexed k - 1
        scse, gate = f"decoder.skip_scse.{level - 1}", f"decoder.skip_gates.{level - 1}"
        rules += [(rf"decoder\.cam{level}\.cse\.fc1\.(weight|bias)", rf"{scse}.channel_squeeze.\1"),
                  (rf"decoder\.cam{level}\.cse\.fc2\.(weight|bias)", rf"{scse}.channel_excite.\1"),
                  (rf"decoder\.cam{level}\.sse\.conv\.(weight|bias)", rf"{scse}.spatial_squeeze.\1"),
                  (rf"decoder\.ag{level}\.theta_x\.weight", f"{gate}.theta.weight"),
                  (rf"decoder\.ag{level}\.phi_g\.weight", f"{gate}.phi.weight"),
                  (rf"decoder\.ag{level}\.psi\.(weight|bias)", rf"{gate}.psi.\1"),
                  (rf"decoder\.lat{level}\.weight", f"decoder.laterals.{level - 1}.weight"),
                  (rf"decoder\.smooth{level}\.dw\.weight", f"decoder.smooth.{level - 1}.depthwise.weight"),
                  (rf"decoder\.smooth{level}\.pw\.weight", f"decoder.smooth.{level - 1}.pointwise.weight")]
    return rules


def convert_original_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict of the original SegFormer3D variant (github.com/KyriakiKolpetinou/PancreasTumorSegmentation,
    ``models/segformer3d_variant.py``, ``SegFormer3D`` with default arguments but any ``in_channels`` and
    ``num_classes``) as one of ``SegFormer3DVariant`` with the same input channels and classes.

    Names follow a table of rules, one per original layer. One layout changes: the fuse layer's 1×1 convolution
    reads [P1, P2, P3, P4] here and [P4, P3, P2, P1] in the original, so the four input-channel blocks of its
    weight are reversed. The result loads strictly (the original has both heads).

    Raises:
        KeyError: a key of the original that has no counterpart here (naming it).
    """
    converted = rename_keys(state_dict, _original_segformer3d_rules(), "SegFormer3D variant")
    fuse = "decoder.fuse.0.weight"
    if fuse in converted:
        weight = converted[fuse]
        levels = 4  # the original always fuses four levels
        blocks = weight.reshape(weight.shape[0], levels, weight.shape[1] // levels, *weight.shape[2:])
        converted[fuse] = blocks.flip(1).reshape(weight.shape)
    return converted
