"""S2CANet against nnU-Net's default PlainConvUNet at the same patch: size, cost, speed, memory.

One command measures, for each network in its own fresh subprocess: parameters, MACs of one forward pass at the
patch (batch 1), forward+backward time per training step (median over --steps after --warmup untimed steps), and
peak memory of a training step. It prints a table and the ratios to PlainConvUNet.

Networks:
  PlainConvUNet     nnU-Net's default 3D U-Net for the patch: from --plans/--configuration, or else the default
                    planner's topology for the patch at isotropic spacing 1 (get_pool_and_conv_props, 32·2^i features
                    capped at 320, 2 convs per stage, InstanceNorm + LeakyReLU), deep supervision on.
  S2CANet           this package's network built for the patch, deep supervision on (four heads).
  original-gather   the same network with the MS-ADC sampling done as the original repository does it (per-tap
                    gather of 8 neighbours, see benchmarks/deformable_conv3d.py), to show what grid_sample saves.

Peak memory: CUDA, ``torch.cuda.max_memory_allocated`` over the training steps (warm-up included) minus the memory
allocated before them (model, input); CPU, the growth of the subprocess' peak RSS (``resource.getrusage``) over
the same span. On CUDA the steps run under fp16 autocast, as nnU-Net trains.

Usage (needs nnunet-ext installed, or its source on PYTHONPATH):
  python benchmarks/s2canet_vs_plainconvunet.py                        # CPU, 64^3, batch 2, 4 channels: ~3 min
  python benchmarks/s2canet_vs_plainconvunet.py --device cuda          # the original's 128^3, batch 2
  python benchmarks/s2canet_vs_plainconvunet.py --patch 128 128 128 --batch 1 --steps 1   # 128^3 on CPU
  python benchmarks/s2canet_vs_plainconvunet.py --plans nnUNet_preprocessed/DatasetX/nnUNetPlans.json \\
      --configuration 3d_fullres --channels 4 --classes 3              # the plan's own U-Net and patch
"""
from __future__ import annotations

import argparse
from contextlib import AbstractContextManager
from unittest import mock

import torch
from torch import nn

from deformable_conv3d import gather_deformable_samples
from harness import Model, TrainingComparison


def s2canet(args: argparse.Namespace) -> tuple[nn.Module, list[int]]:
    """S2CANet built for the reference's patch (rounded to multiples of 8 if needed)."""
    from nnunet_ext.architectures import S2CANet
    patch = S2CANet.nearest_patch_size(args.patch)
    return S2CANet(args.channels, args.classes, deep_supervision=True, patch_size=patch), patch


def original_gather() -> AbstractContextManager:
    from nnunet_ext.architectures.blocks import deformable_conv

    def gather(x: torch.Tensor, offsets: torch.Tensor, kernel_size: int, dilation: int = 1,
               border: str = "zeros") -> torch.Tensor:
        # the original's sampling, whatever border rule the network was built with: the cost is what is measured
        return gather_deformable_samples(x, offsets, kernel_size, dilation)

    return mock.patch.object(deformable_conv, "deformable_sample", gather)


COMPARISON = TrainingComparison(
    script=__file__, description=__doc__.split("\n\n")[0],
    models=(Model("S2CANet", s2canet),
            Model("original-gather", s2canet, original_gather, "--skip-gather", "leave out the original-gather run")),
    cpu_patch=[64, 64, 64], cuda_patch=[128, 128, 128], channels=4, classes=3, configuration="3d_fullres",
    cpu_steps=2, patch_width=14, cpu_column=True, progress=True,
    contrast=("gather / grid_sample sampling in the whole network", "original-gather", "S2CANet"))

if __name__ == "__main__":
    COMPARISON.main()
