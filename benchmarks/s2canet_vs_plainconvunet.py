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
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import torch
from torch import nn

MODELS = ("PlainConvUNet", "S2CANet", "original-gather")


def default_plain_conv_unet(patch: list[int], channels: int, classes: int) -> tuple[nn.Module, list[int]]:
    """nnU-Net's default 3D PlainConvUNet for ``patch`` at spacing 1; returns it and the (divisible) patch."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    _, pool_kernels, conv_kernels, planned_patch, _ = get_pool_and_conv_props([1.0] * len(patch), patch, 4, 999999)
    stages = len(pool_kernels)
    network = PlainConvUNet(
        input_channels=channels, n_stages=stages, features_per_stage=[min(320, 32 * 2 ** i) for i in range(stages)],
        conv_op=nn.Conv3d, kernel_sizes=conv_kernels, strides=pool_kernels, n_conv_per_stage=[2] * stages,
        num_classes=classes, n_conv_per_stage_decoder=[2] * (stages - 1), conv_bias=True,
        norm_op=nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True}, dropout_op=None,
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


def _gather_formulation():
    """``gather_deformable_samples`` of the deformable-convolution benchmark next to this file."""
    spec = importlib.util.spec_from_file_location("deformable_conv3d", Path(__file__).with_name("deformable_conv3d.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.gather_deformable_samples


def build(model: str, args: argparse.Namespace) -> tuple[nn.Module, list[int]]:
    if model == "PlainConvUNet":
        if args.plans:
            network, patch = planned_plain_conv_unet(args.plans, args.configuration, args.channels, args.classes)
            return network, (args.patch or patch)
        return default_plain_conv_unet(args.patch, args.channels, args.classes)
    from nnunet_ext.architectures import S2CANet
    patch = S2CANet.nearest_patch_size(args.patch)
    return S2CANet(args.channels, args.classes, deep_supervision=True, patch_size=patch), patch


def measure(model: str, args: argparse.Namespace) -> dict:
    """Runs in a fresh subprocess: time and peak memory of training steps, then parameters and MACs."""
    from nnunet_ext.architectures.blocks import deformable_conv
    from nnunet_ext.architectures.profiling import count_macs, count_parameters

    torch.manual_seed(0)
    device = torch.device(args.device)
    sampling = (mock.patch.object(deformable_conv, "deformable_sample", _gather_formulation())
                if model == "original-gather" else nullcontext())
    with sampling:
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
        times, cpu_times = [], []
        for i in range(args.warmup + args.steps):
            start, cpu_start = time.perf_counter(), time.process_time()
            step()
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu_start)
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated() - base
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
        network.zero_grad(set_to_none=True)
        macs = count_macs(network, (1, args.channels, *patch), device=device)
    return {"model": model, "patch": patch, "params": count_parameters(network), "macs": macs,
            "step_s": statistics.median(times),
            "cpu_s": statistics.median(cpu_times), "peak_bytes": peak}


def run_in_subprocess(model: str, argv: list[str]) -> dict:
    result = subprocess.run([sys.executable, __file__, *argv, "--worker", model], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"measuring {model} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def print_report(rows: list[dict], args: argparse.Namespace) -> None:
    reference = rows[0]
    threads = f", {torch.get_num_threads()} threads" if args.device == "cpu" else ", fp16 autocast"
    print(f"device {args.device}{threads}; batch {args.batch}, {args.channels} channel(s), {args.classes} classes; "
          f"fwd+bwd median of {args.steps} steps after {args.warmup} warm-up (wall and process CPU time); "
          f"MACs at batch 1")
    header = (f"{'network':<16} {'patch':<14} {'params':>12} {'GMAC':>9} {'fwd+bwd s':>10} {'CPU s':>8} "
              f"{'peak MiB':>10}")
    print(header)
    print("-" * len(header))
    for row in rows:
        patch = "x".join(str(p) for p in row["patch"])
        print(f"{row['model']:<16} {patch:<14} {row['params']:>12,} {row['macs'] / 1e9:>9.2f} "
              f"{row['step_s']:>10.3f} {row['cpu_s']:>8.2f} {row['peak_bytes'] / 2 ** 20:>10.0f}")
    print("\nratios to PlainConvUNet (lower is cheaper/faster):")
    for row in rows[1:]:
        print(f"  {row['model']:<16} params {row['params'] / reference['params']:.3f}  "
              f"MACs {row['macs'] / reference['macs']:.3f}  time {row['step_s'] / reference['step_s']:.3f}  "
              f"CPU time {row['cpu_s'] / reference['cpu_s']:.3f}  "
              f"memory {row['peak_bytes'] / max(reference['peak_bytes'], 1):.3f}")
    if len(rows) > 2:
        ours, gather = rows[1], rows[2]
        print(f"\ngather / grid_sample sampling in the whole network: time x{gather['step_s'] / ours['step_s']:.2f}, "
              f"memory x{gather['peak_bytes'] / max(ours['peak_bytes'], 1):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patch", type=int, nargs=3, metavar=("D", "H", "W"),
                        help="patch size (default: 64 64 64 on CPU, 128 128 128 on CUDA, the plan's with --plans)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, help="timed steps (default: 2 on CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default: 1 on CPU, 5 on CUDA)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's default)")
    parser.add_argument("--plans", help="plans.json whose U-Net is the reference")
    parser.add_argument("--configuration", default="3d_fullres", help="configuration in --plans")
    parser.add_argument("--skip-gather", action="store_true", help="leave out the original-gather run")
    parser.add_argument("--worker", choices=MODELS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cuda = args.device == "cuda"
    args.steps = args.steps or (20 if cuda else 2)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    if args.patch is None and not args.plans:
        args.patch = [128, 128, 128] if cuda else [64, 64, 64]

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(measure(args.worker, args)))
        return

    argv = [a for a in sys.argv[1:] if a != "--skip-gather"]
    reference = run_in_subprocess("PlainConvUNet", argv)
    if args.patch is not None and list(reference["patch"]) != list(args.patch):
        print(f"note: nnU-Net's topology needs a patch divisible by its strides: {args.patch} -> "
              f"{reference['patch']}, used for all networks")
    # every network runs at the reference's patch (S2CANet rounds it to multiples of 8 if needed)
    argv = argv + ["--patch", *map(str, reference["patch"])]
    models = MODELS[1:2] if args.skip_gather else MODELS[1:]
    rows = [reference]
    for model in models:
        rows.append(run_in_subprocess(model, argv))
        print(f"measured {model}: {json.dumps(rows[-1])}", file=sys.stderr)
    print_report(rows, args)


if __name__ == "__main__":
    main()
