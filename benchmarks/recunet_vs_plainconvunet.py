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
import json
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from unittest import mock

import torch
from torch import nn

MODELS = ("PlainConvUNet", "RECUNet", "original-style")


def permuted_triplet_attention(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Triplet attention as the original computes it: per branch a permuted contiguous copy of x, gated, permuted
    back (another copy), then the mean of the re-weighted copies."""
    outputs = []
    for axis, gate in enumerate(block.gates, start=1):
        rotated = x.transpose(1, axis).contiguous()
        outputs.append((rotated * gate(rotated)).transpose(1, axis).contiguous())
    return sum(outputs) / len(outputs)


def default_plain_conv_unet(patch: list[int], channels: int, classes: int) -> tuple[nn.Module, list[int]]:
    """nnU-Net's default 2D PlainConvUNet for ``patch`` at spacing 1; returns it and the (divisible) patch."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    _, pool_kernels, conv_kernels, planned_patch, _ = get_pool_and_conv_props([1.0] * len(patch), patch, 4, 999999)
    stages = len(pool_kernels)
    network = PlainConvUNet(
        input_channels=channels, n_stages=stages, features_per_stage=[min(512, 32 * 2 ** i) for i in range(stages)],
        conv_op=nn.Conv2d, kernel_sizes=conv_kernels, strides=pool_kernels, n_conv_per_stage=[2] * stages,
        num_classes=classes, n_conv_per_stage_decoder=[2] * (stages - 1), conv_bias=True,
        norm_op=nn.InstanceNorm2d, norm_op_kwargs={"eps": 1e-5, "affine": True}, dropout_op=None,
        dropout_op_kwargs=None, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True)
    return network, [int(p) for p in planned_patch]


def planned_plain_conv_unet(plans: str, configuration: str, channels: int,
                            classes: int) -> tuple[nn.Module, list[int]]:
    """The network and patch of ``configuration`` in a plans.json, built as nnU-Net builds it."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    config = PlansManager(plans).get_configuration(configuration)
    network = get_network_from_plans(config.network_arch_class_name, config.network_arch_init_kwargs,
                                     config.network_arch_init_kwargs_req_import, channels, classes,
                                     deep_supervision=True)
    return network, list(config.patch_size)


def build(model: str, args: argparse.Namespace) -> tuple[nn.Module, list[int]]:
    if model == "PlainConvUNet":
        if args.plans:
            network, patch = planned_plain_conv_unet(args.plans, args.configuration, args.channels, args.classes)
            return network, (args.patch or patch)
        return default_plain_conv_unet(args.patch, args.channels, args.classes)
    from nnunet_ext.architectures import RECUNet
    return RECUNet(args.channels, args.classes), args.patch


def measure(model: str, args: argparse.Namespace) -> dict:
    """Runs in a fresh subprocess: time and peak memory of training steps, then parameters and MACs."""
    from nnunet_ext.architectures.blocks import TripletAttention
    from nnunet_ext.architectures.profiling import count_macs, count_parameters

    torch.manual_seed(0)
    device = torch.device(args.device)
    attention = (mock.patch.object(TripletAttention, "forward", permuted_triplet_attention)
                 if model == "original-style" else nullcontext())
    with attention:
        network, patch = build(model, args)
        network = network.to(device).train()
        x = torch.randn(args.batch, args.channels, *patch, device=device)
        autocast = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else nullcontext()

        def step() -> None:
            network.zero_grad(set_to_none=True)
            with autocast:
                outputs = network(x)
                outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
                loss = sum(o.float().mean() for o in outputs)
            loss.backward()
            if device.type == "cuda":
                torch.cuda.synchronize()

        if device.type == "cuda":
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        else:
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        times = []
        for i in range(args.warmup + args.steps):
            start = time.perf_counter()
            step()
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated() - base
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
        network.zero_grad(set_to_none=True)
        macs = count_macs(network, (1, args.channels, *patch), device=device)
    return {"model": model, "patch": patch, "params": count_parameters(network), "macs": macs,
            "step_s": statistics.median(times), "peak_bytes": peak}


def run_in_subprocess(model: str, argv: list[str]) -> dict:
    result = subprocess.run([sys.executable, __file__, *argv, "--worker", model], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"measuring {model} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def print_report(rows: list[dict], args: argparse.Namespace) -> None:
    reference = rows[0]
    threads = f", {torch.get_num_threads()} threads" if args.device == "cpu" else ", fp16 autocast"
    print(f"device {args.device}{threads}; batch {args.batch}, {args.channels} channel(s), {args.classes} classes; "
          f"fwd+bwd median of {args.steps} steps after {args.warmup} warm-up; MACs at batch 1")
    header = f"{'network':<16} {'patch':<10} {'params':>12} {'GMAC':>9} {'fwd+bwd s':>10} {'peak MiB':>10}"
    print(header)
    print("-" * len(header))
    for row in rows:
        patch = "x".join(str(p) for p in row["patch"])
        print(f"{row['model']:<16} {patch:<10} {row['params']:>12,} {row['macs'] / 1e9:>9.2f} "
              f"{row['step_s']:>10.3f} {row['peak_bytes'] / 2 ** 20:>10.0f}")
    print("\nratios to PlainConvUNet (lower is cheaper/faster):")
    for row in rows[1:]:
        print(f"  {row['model']:<16} params {row['params'] / reference['params']:.3f}  "
              f"MACs {row['macs'] / reference['macs']:.3f}  time {row['step_s'] / reference['step_s']:.3f}  "
              f"memory {row['peak_bytes'] / max(reference['peak_bytes'], 1):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patch", type=int, nargs=2, metavar=("H", "W"),
                        help="patch size (default: 128 128 on CPU, 512 512 on CUDA, the plan's with --plans)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, help="timed steps (default: 3 on CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default: 1 on CPU, 5 on CUDA)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's default)")
    parser.add_argument("--plans", help="plans.json whose U-Net is the reference")
    parser.add_argument("--configuration", default="2d", help="configuration in --plans")
    parser.add_argument("--worker", choices=MODELS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cuda = args.device == "cuda"
    args.steps = args.steps or (20 if cuda else 3)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    if args.patch is None and not args.plans:
        args.patch = [512, 512] if cuda else [128, 128]

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(measure(args.worker, args)))
        return

    argv = sys.argv[1:]
    reference = run_in_subprocess("PlainConvUNet", argv)
    if args.patch is not None and list(reference["patch"]) != list(args.patch):
        print(f"note: nnU-Net's topology needs a patch divisible by its strides: {args.patch} -> "
              f"{reference['patch']}, used for all networks")
    # every network runs at the reference's patch (the plan's, or the requested one made divisible)
    argv = argv + ["--patch", *map(str, reference["patch"])]
    rows = [reference] + [run_in_subprocess(model, argv) for model in MODELS[1:]]
    print_report(rows, args)


if __name__ == "__main__":
    main()
