"""TinyUNet: a deliberately small U-Net (Ronneberger et al., 2015) showing nnunet-ext's architecture contract.

Pure PyTorch: this module imports torch and nnunet-ext's shared blocks, never nnunetv2, so the network can be
built, tested and profiled without nnU-Net. The contract it follows (nnunet-ext DESIGN §3):

* constructor ``(input_channels, num_classes, deep_supervision=False, **hyper_parameters)``;
* any spatial size: the input is zero-padded to a multiple of the total stride and the outputs are cropped back;
* deep supervision: a list of logits, full resolution first, switched at run time by ``decoder.deep_supervision``
  (nnU-Net's ``set_deep_supervision_enabled`` sets exactly that attribute); the heads exist either way, so the
  state dict is the same in training and prediction;
* ``deep_supervision_scales(patch_size)`` returns the scale of each output, which the trainer hands to nnU-Net
  to downsample the targets.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_ext.architectures.blocks import InstanceNorm

DEFAULT_FEATURES = (16, 32, 64)


class ConvBlock(nn.Sequential):
    """Two (convolution, instance norm, LeakyReLU) layers; the first may downsample.

    Args:
        conv_op: ``nn.Conv2d`` or ``nn.Conv3d``, which fixes the dimensionality.
        in_channels, out_channels: channels before and after the block.
        stride: stride of the first convolution (2 halves every spatial axis).

    Shapes:
        (B, in_channels, *S) -> (B, out_channels, *ceil(S / stride)).
    """

    def __init__(self, conv_op: type[nn.Module], in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(
            conv_op(in_channels, out_channels, 3, stride=stride, padding=1),
            InstanceNorm(out_channels, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
            conv_op(out_channels, out_channels, 3, padding=1),
            InstanceNorm(out_channels, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
        )


class TinyUNetDecoder(nn.Module):
    """Transposed-convolution upsampling, skip concatenation and a ConvBlock per level, with a 1x1 head per level.

    Args:
        conv_op: ``nn.Conv2d`` or ``nn.Conv3d``.
        features: encoder channels per stage, full resolution first.
        num_classes: channels of every head.
        deep_supervision: whether ``forward`` returns the logits of every level or only the finest.

    Shapes:
        encoder features [(B, features[i], *S / 2^i)] -> logits (B, num_classes, *S), or with deep supervision
        a list of len(features) - 1 logits at strides 1, 2, 4, ...
    """

    def __init__(self, conv_op: type[nn.Module], features: Sequence[int], num_classes: int,
                 deep_supervision: bool) -> None:
        super().__init__()
        transposed = nn.ConvTranspose2d if issubclass(conv_op, nn.Conv2d) else nn.ConvTranspose3d
        levels = range(len(features) - 1)
        self.upsample = nn.ModuleList(transposed(features[i + 1], features[i], 2, stride=2) for i in levels)
        self.blocks = nn.ModuleList(ConvBlock(conv_op, 2 * features[i], features[i]) for i in levels)
        self.heads = nn.ModuleList(conv_op(features[i], num_classes, 1) for i in levels)
        self.deep_supervision = deep_supervision

    def forward(self, skips: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        x = skips[-1]
        logits = []
        for level in reversed(range(len(self.blocks))):  # coarsest decoder level first
            x = self.blocks[level](torch.cat([self.upsample[level](x), skips[level]], dim=1))
            logits.append(self.heads[level](x))
        # every head runs in every pass, so every parameter gets a gradient (DDP needs that)
        return logits[::-1] if self.deep_supervision else logits[-1]


class TinyUNet(nn.Module):
    """A U-Net with ``len(features)`` stages, for 2D or 3D images.

    Paper: Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation", MICCAI 2015.

    Args:
        input_channels: channels of the input image (any count).
        num_classes: output channels (logits, no softmax).
        deep_supervision: initial value of ``decoder.deep_supervision``.
        conv_op: ``nn.Conv3d`` (default) or ``nn.Conv2d``.
        features: channels per stage, full resolution first; stage i works at stride 2^i.

    Shapes:
        input (B, C, *S), any S; output (B, num_classes, *S), or with deep supervision a list whose k-th entry
        is (B, num_classes, *ceil(S / 2^k)), k = 0 .. len(features) - 2.
    """

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False,
                 conv_op: type[nn.Module] = nn.Conv3d, features: Sequence[int] = DEFAULT_FEATURES) -> None:
        super().__init__()
        if len(features) < 2:
            raise ValueError(f"TinyUNet needs at least 2 stages, got features={tuple(features)}")
        self.encoder = nn.ModuleList(ConvBlock(conv_op, c_in, c_out, stride=1 if i == 0 else 2)
                                     for i, (c_in, c_out) in enumerate(zip([input_channels, *features], features)))
        self.decoder = TinyUNetDecoder(conv_op, features, num_classes, deep_supervision)
        self.total_stride = 2 ** (len(features) - 1)

    @staticmethod
    def deep_supervision_scales(patch_size: Sequence[int],
                                features: Sequence[int] = DEFAULT_FEATURES) -> list[list[float]]:
        """Scale of each deep-supervision output relative to ``patch_size``, full resolution first.

        nnU-Net resizes the targets to ``round(size * scale)``, which these scales make equal to the outputs'
        ``ceil(size / 2^k)``.
        """
        return [[math.ceil(s / 2 ** k) / s for s in patch_size] for k in range(len(features) - 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        size = x.shape[2:]
        padded = [math.ceil(s / self.total_stride) * self.total_stride for s in size]
        if padded != list(size):
            # F.pad takes (before, after) pairs starting from the last axis
            x = F.pad(x, [amount for s, p in zip(reversed(size), reversed(padded)) for amount in (0, p - s)])
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        logits = self.decoder(skips)
        if not self.decoder.deep_supervision:
            return _crop(logits, size)
        return [_crop(out, [math.ceil(s / 2 ** k) for s in size]) for k, out in enumerate(logits)]


def _crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return x[(..., *(slice(0, s) for s in size))]
