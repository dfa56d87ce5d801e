"""SegFormer3DVariant against nnU-Net's default PlainConvUNet at the same patch: size, cost, speed, memory.

One command measures, for each network in its own fresh subprocess: parameters, MACs of one forward pass at the
patch (batch 1, attention included), forward+backward time per training step (median over --steps after
--warmup untimed steps), and peak memory of a training step. It prints a table and the ratios to PlainConvUNet.

Networks:
  PlainConvUNet           nnU-Net's default 3D U-Net for the patch: from --plans/--configuration, or else the
                          default planner's topology for the patch at isotropic spacing 1 (get_pool_and_conv_props,
                          32·2^i features capped at 320, 2 convs per stage, InstanceNorm + LeakyReLU), deep
                          supervision on.
  SegFormer3DVariant      this package's network, deep supervision on.
  original-style          the same network with its attention computed as the original repository does, an
                          explicit softmax(Q·Kᵀ·d^-1/2)·V (score matrix stored), to show what SDPA saves.

Peak memory: CUDA, ``torch.cuda.max_memory_allocated`` over the training steps (warm-up included) minus the memory
allocated before them (model, input); CPU, the growth of the subprocess' peak RSS (``resource.getrusage``) over
the same span.
On CUDA the steps run under fp16 autocast, as nnU-Net trains.

Usage (needs nnunet-ext installed, or its source on PYTHONPATH):
  python benchmarks/segformer3d_vs_plainconvunet.py                        # CPU, 32x96x96, batch 2: ~1.5 min
  python benchmarks/segformer3d_vs_plainconvunet.py --device cuda          # original patch 32x160x208, batch 2
  python benchmarks/segformer3d_vs_plainconvunet.py --patch 32 160 208 --batch 1 --steps 2
      # the original patch on CPU (nnU-Net's U-Net makes it 32x160x224): ~3 min on 2 cores; original-style
      # needs ~6.5 GB of RAM there (~13 GB at batch 2)
  python benchmarks/segformer3d_vs_plainconvunet.py --plans nnUNet_preprocessed/DatasetX/nnUNetPlans.json \\
      --configuration 3d_fullres --channels 1 --classes 3                # the plan's own U-Net and patch
"""
from __future__ import annotations

import argparse
from contextlib import AbstractContextManager
from unittest import mock

import torch
from torch import nn

from harness import Model, TrainingComparison


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention as the original repository computes it: the full score matrix, softmax, then the values."""
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    return scores.softmax(dim=-1) @ v


def segformer3d_variant(args: argparse.Namespace) -> tuple[nn.Module, list[int]]:
    from nnunet_ext.architectures import SegFormer3DVariant
    return SegFormer3DVariant(args.channels, args.classes, deep_supervision=True), args.patch


def original_attention() -> AbstractContextManager:
    from nnunet_ext.architectures import segformer3d_variant as module
    return mock.patch.object(module, "scaled_dot_product_attention", explicit_attention)


COMPARISON = TrainingComparison(
    script=__file__, description=__doc__.split("\n\n")[0],
    models=(Model("SegFormer3DVariant", segformer3d_variant),
            Model("original-style", segformer3d_variant, original_attention)),
    cpu_patch=[32, 96, 96], cuda_patch=[32, 160, 208], channels=1, classes=3, configuration="3d_fullres",
    cpu_steps=3, name_width=20, patch_width=14,
    contrast=("explicit attention / SDPA", "original-style", "SegFormer3DVariant"))

if __name__ == "__main__":
    COMPARISON.main()
