"""RECUNet against nnU-Net's default 2D PlainConvUNet at the same patch: size, cost, speed, memory.

One command measures, for each network in its own fresh subprocess: parameters, MACs of one forward pass at the
patch (batch 1), forward+backward time per training step (median over --steps after --warmup untimed steps), and
peak memory of a training step. It prints a table and the ratios to PlainConvUNet.

Networks:
  PlainConvUNet    nnU-Net's default 2D U-Net for the patch: from --plans/--configuration, or else the default
                   planner's topology for the patch at spacing 1 (get_pool_and_conv_props, 32·2^i features capped
                   at 512, 2 convs per stage, InstanceNorm + LeakyReLU), deep supervision on, as nnU-Net trains it.
  RECUNet          this package's network at the original widths, single head (as nnUNetTrainerRECUNet trains it).
  original-style   the same network with triplet attention computed as the original repository does: three
                   permuted, re-weighted copies of the input, averaged.

Peak memory: CUDA, ``torch.cuda.max_memory_allocated`` over the training steps (warm-up included) minus the memory
allocated before them (model, input); CPU, the growth of the subprocess' peak RSS (``resource.getrusage``) over
the same span. On CUDA the steps run under fp16 autocast, as nnU-Net trains.

Usage (needs nnunet-ext installed, or its source on PYTHONPATH):
  python benchmarks/recunet_vs_plainconvunet.py                      # CPU, 128x128, batch 2
  python benchmarks/recunet_vs_plainconvunet.py --patch 352 352 --batch 1 --steps 2   # the fidelity size
  python benchmarks/recunet_vs_plainconvunet.py --device cuda --patch 512 512 --batch 12   # LiTS-like 2D plan
  python benchmarks/recunet_vs_plainconvunet.py --plans nnUNet_preprocessed/DatasetX/nnUNetPlans.json \\
      --configuration 2d --channels 1 --classes 2                    # the plan's own U-Net and patch
"""
from __future__ import annotations

import argparse
from contextlib import AbstractContextManager
from unittest import mock

import torch
from torch import nn

from harness import Model, TrainingComparison


def permuted_triplet_attention(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Triplet attention as the original computes it: per branch a permuted contiguous copy of x, gated, permuted
    back (another copy), then the mean of the re-weighted copies."""
    outputs = []
    for axis, gate in enumerate(block.gates, start=1):
        rotated = x.transpose(1, axis).contiguous()
        outputs.append((rotated * gate(rotated)).transpose(1, axis).contiguous())
    return sum(outputs) / len(outputs)


def recunet(args: argparse.Namespace) -> tuple[nn.Module, list[int]]:
    from nnunet_ext.architectures import RECUNet
    return RECUNet(args.channels, args.classes), args.patch


def original_triplet_attention() -> AbstractContextManager:
    from nnunet_ext.architectures.blocks import TripletAttention
    return mock.patch.object(TripletAttention, "forward", permuted_triplet_attention)


COMPARISON = TrainingComparison(
    script=__file__, description=__doc__.split("\n\n")[0],
    models=(Model("RECUNet", recunet), Model("original-style", recunet, original_triplet_attention)),
    cpu_patch=[128, 128], cuda_patch=[512, 512], channels=1, classes=2, configuration="2d", cpu_steps=3)

if __name__ == "__main__":
    COMPARISON.main()
