"""RccSegmentor (published and light) against nnU-Net's default 2D PlainConvUNet: inference speed in slices/second.

One command measures, for each network and slice size, in a fresh subprocess: parameters, MACs per slice (counted
on the meta device, no arithmetic), forward-pass throughput at batch --batch (eval mode, inference mode, deep
supervision off, as nnU-Net predicts; the median of --steps timed passes after one untimed single-slice pass and
--warmup untimed full passes), and peak memory. It prints a table and, per size, the ratios to PlainConvUNet. A network runs on the input nnU-Net would
give it for such slices: PlainConvUNet on its planned patch (the slice size rounded up to a multiple of its total
stride, e.g. 384² for 352² slices), RccSegmentor on the slice itself.

Networks:
  PlainConvUNet        nnU-Net's default 2D U-Net planned for slices of that size: from --plans/--configuration,
                       or else the default planner's topology for the size at spacing 1 (get_pool_and_conv_props
                       with a minimum edge of 4, 32·2^i features capped at 512, 2 convolutions per stage,
                       InstanceNorm + LeakyReLU), which is what nnU-Net plans for 2D CT slices of that size.
  RccSegmentor         the published model (PVTv2-b2, full-convolution FEM).
  RccSegmentorLight    depthwise FEM convolutions.

Peak memory: CUDA, ``torch.cuda.max_memory_allocated`` over the passes minus what was allocated before (model,
input); CPU, the growth of the subprocess' peak RSS over the same span. On CUDA the passes run under fp16 autocast,
as nnU-Net predicts; the seed repository claims 136 FPS for RccSegmentor (GPU not stated).

Usage (needs nnunet-ext installed, or its source on PYTHONPATH):
  python benchmarks/rccsegmentor_vs_plainconvunet.py      # CPU, 352² and 512², batch 16, 1 pass each: 21 min on
                                                          # 2 busy cores, most of it the published FEM
  python benchmarks/rccsegmentor_vs_plainconvunet.py --device cuda                   # 20 passes after 5 warm-up
  python benchmarks/rccsegmentor_vs_plainconvunet.py --models PlainConvUNet RccSegmentorLight --sizes 512
  python benchmarks/rccsegmentor_vs_plainconvunet.py --plans nnUNet_preprocessed/DatasetX/nnUNetPlans.json \\
      --sizes 512                                         # the plan's own 2d U-Net
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext

import torch
from torch import nn

MODELS = ("PlainConvUNet", "RccSegmentor", "RccSegmentorLight")
SEED_CLAIMED_FPS = 136


def default_plain_conv_unet(size: int, channels: int, classes: int) -> tuple[nn.Module, int]:
    """nnU-Net's default 2D PlainConvUNet for ``size``×``size`` slices at spacing 1, and its patch edge (``size``
    rounded up to a multiple of the U-Net's total stride, as the planner does: 352 -> 384)."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    _, pool_kernels, conv_kernels, patch, _ = get_pool_and_conv_props([1.0, 1.0], [size, size], 4, 999999)
    stages = len(pool_kernels)
    network = PlainConvUNet(
        input_channels=channels, n_stages=stages, features_per_stage=[min(512, 32 * 2 ** i) for i in range(stages)],
        conv_op=nn.Conv2d, kernel_sizes=conv_kernels, strides=pool_kernels, n_conv_per_stage=[2] * stages,
        num_classes=classes, n_conv_per_stage_decoder=[2] * (stages - 1), conv_bias=True,
        norm_op=nn.InstanceNorm2d, norm_op_kwargs={"eps": 1e-5, "affine": True}, dropout_op=None,
        dropout_op_kwargs=None, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=False)
    return network, int(patch[0])


def planned_plain_conv_unet(plans: str, configuration: str, size: int, channels: int,
                            classes: int) -> tuple[nn.Module, int]:
    """The network of ``configuration`` in a plans.json, built as nnU-Net builds it for prediction, and the patch
    edge for ``size`` (rounded up to a multiple of the U-Net's total stride)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    config = PlansManager(plans).get_configuration(configuration)
    network = get_network_from_plans(config.network_arch_class_name, config.network_arch_init_kwargs,
                                     config.network_arch_init_kwargs_req_import, channels, classes,
                                     deep_supervision=False)
    total_stride = math.prod(max(s) if isinstance(s, (list, tuple)) else s
                             for s in config.network_arch_init_kwargs["strides"])
    return network, math.ceil(size / total_stride) * total_stride


def build(model: str, size: int, args: argparse.Namespace) -> tuple[nn.Module, int]:
    """The network and the edge of the square input it runs on for slices of ``size``."""
    if model == "PlainConvUNet":
        if args.plans:
            return planned_plain_conv_unet(args.plans, args.configuration, size, args.channels, args.classes)
        return default_plain_conv_unet(size, args.channels, args.classes)
    from nnunet_ext import architectures
    # RccSegmentor pads to multiples of 32 itself (352 and 512 are)
    return getattr(architectures, model)(args.channels, args.classes, deep_supervision=False), size


def measure(model: str, size: int, args: argparse.Namespace) -> dict:
    """Runs in a fresh subprocess: throughput and peak memory of forward passes, then parameters and MACs."""
    from nnunet_ext.architectures.profiling import count_macs, count_parameters

    torch.manual_seed(0)
    device = torch.device(args.device)
    network, patch = build(model, size, args)
    network = network.to(device).eval()
    x = torch.randn(args.batch, args.channels, patch, patch, device=device)
    autocast = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else nullcontext()

    def forward(batch: torch.Tensor) -> None:
        with torch.inference_mode(), autocast:
            network(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()

    forward(x[:1])  # one slice first: one-time set-up (thread pools, kernel selection) at almost no cost

    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        forward(x)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    parameters = count_parameters(network)
    with torch.device("meta"):
        meta_network, _ = build(model, size, args)
    macs = count_macs(meta_network, (1, args.channels, patch, patch))
    return {"model": model, "size": size, "patch": patch, "params": parameters, "macs": macs,
            "slices_per_s": args.batch / statistics.median(times), "peak_bytes": peak}


def run_in_subprocess(model: str, size: int, argv: list[str]) -> dict:
    result = subprocess.run([sys.executable, __file__, *argv, "--worker", model, str(size)], check=False,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"measuring {model} at {size}² failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def print_report(rows: list[dict], args: argparse.Namespace) -> None:
    mode = f"{torch.get_num_threads()} threads" if args.device == "cpu" else "fp16 autocast"
    print(f"device {args.device}, {mode}; forward passes at batch {args.batch}, {args.channels} channel(s), "
          f"{args.classes} classes; median of {args.steps} pass(es) after {args.warmup} warm-up; MACs per slice")
    header = f"{'network':<19} {'slice':<6} {'input':<6} {'params':>12} {'GMAC':>8} {'slices/s':>9} {'peak MiB':>9}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['model']:<19} {str(row['size']) + '²':<6} {str(row['patch']) + '²':<6} {row['params']:>12,} {row['macs'] / 1e9:>8.2f} "
              f"{row['slices_per_s']:>9.2f} {row['peak_bytes'] / 2 ** 20:>9.0f}")
    print("\nratios to PlainConvUNet at the same slice size (speed: higher is faster; MACs, memory: lower is cheaper):")
    for size in args.sizes:
        reference = next((r for r in rows if r["size"] == size and r["model"] == "PlainConvUNet"), None)
        for row in rows:
            if reference is None or row is reference or row["size"] != size:
                continue
            print(f"  {size}²  {row['model']:<19} speed {row['slices_per_s'] / reference['slices_per_s']:.3f}  "
                  f"MACs {row['macs'] / reference['macs']:.3f}  "
                  f"memory {row['peak_bytes'] / max(reference['peak_bytes'], 1):.3f}")
    if args.device == "cuda":
        for row in rows:
            if row["model"] == "RccSegmentor":
                print(f"\n{row['model']} at {row['size']}²: {row['slices_per_s']:.0f} slices/s against the seed's "
                      f"claimed {SEED_CLAIMED_FPS} FPS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[352, 512], help="square slice sizes")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, help="timed passes (default: 1 on CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, help="untimed passes first (default: 0 on CPU, 5 on CUDA)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's default)")
    parser.add_argument("--plans", help="plans.json whose U-Net is the reference")
    parser.add_argument("--configuration", default="2d", help="configuration in --plans")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cuda = args.device == "cuda"
    args.steps = args.steps or (20 if cuda else 1)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else 0)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(measure(args.worker[0], int(args.worker[1]), args)))
        return
    rows = []
    for size in args.sizes:
        for model in args.models:
            rows.append(run_in_subprocess(model, size, sys.argv[1:]))
            print(f"measured {model} at {size}²", file=sys.stderr, flush=True)
    print_report(rows, args)


if __name__ == "__main__":
    main()
