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
import sys

import torch
from torch import nn

from harness import (add_plans_arguments, add_run_arguments, autocast, gmac_column, measure_calls, peak_mib_column,
                     plain_conv_unet, print_table, ratios_text, resolve_run_arguments, run_worker)

MODELS = ("PlainConvUNet", "RccSegmentor", "RccSegmentorLight")
SEED_CLAIMED_FPS = 136


def build(model: str, size: int, args: argparse.Namespace) -> tuple[nn.Module, int]:
    """The network and the edge of the square input it runs on for slices of ``size``: PlainConvUNet's patch is
    ``size`` rounded up to a multiple of its total stride, as the planner does (352 -> 384)."""
    if model == "PlainConvUNet":
        network, patch, config = plain_conv_unet(args, [size, size], deep_supervision=False)
        if config is None:
            return network, patch[0]
        total_stride = math.prod(max(s) if isinstance(s, (list, tuple)) else s
                                 for s in config.network_arch_init_kwargs["strides"])
        return network, math.ceil(size / total_stride) * total_stride
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

    def forward(batch: torch.Tensor) -> None:
        with torch.inference_mode(), autocast(device):
            network(batch)

    forward(x[:1])  # one slice first: one-time set-up (thread pools, kernel selection) at almost no cost
    timing = measure_calls(lambda: forward(x), device, args.warmup, args.steps)
    parameters = count_parameters(network)
    with torch.device("meta"):
        meta_network, _ = build(model, size, args)
    macs = count_macs(meta_network, (1, args.channels, patch, patch))
    return {"model": model, "size": size, "patch": patch, "params": parameters, "macs": macs,
            "slices_per_s": args.batch / timing["step_s"], "peak_bytes": timing["peak_bytes"]}


def print_report(rows: list[dict], args: argparse.Namespace) -> None:
    mode = f"{torch.get_num_threads()} threads" if args.device == "cpu" else "fp16 autocast"
    print(f"device {args.device}, {mode}; forward passes at batch {args.batch}, {args.channels} channel(s), "
          f"{args.classes} classes; median of {args.steps} pass(es) after {args.warmup} warm-up; MACs per slice")
    print_table(rows, [("network", "<19", lambda row: row["model"]),
                       ("slice", "<6", lambda row: f"{row['size']}²"), ("input", "<6", lambda row: f"{row['patch']}²"),
                       ("params", ">12", lambda row: f"{row['params']:,}"), gmac_column(8),
                       ("slices/s", ">9", lambda row: f"{row['slices_per_s']:.2f}"), peak_mib_column(9)])
    print("\nratios to PlainConvUNet at the same slice size (speed: higher is faster; MACs, memory: lower is cheaper):")
    fields = [("speed", "slices_per_s"), ("MACs", "macs"), ("memory", "peak_bytes")]
    for size in args.sizes:
        reference = next((r for r in rows if r["size"] == size and r["model"] == "PlainConvUNet"), None)
        for row in rows:
            if reference is None or row is reference or row["size"] != size:
                continue
            print(f"  {size}²  {row['model']:<19} {ratios_text(row, reference, fields)}")
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
    add_run_arguments(parser, "passes", cpu_steps=1, cpu_warmup=0)
    add_plans_arguments(parser, "2d")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    resolve_run_arguments(args, cpu_steps=1, cpu_warmup=0)
    if args.worker:
        print(json.dumps(measure(args.worker[0], int(args.worker[1]), args)))
        return
    rows = []
    for size in args.sizes:
        for model in args.models:
            rows.append(run_worker(__file__, sys.argv[1:], [model, str(size)], f"{model} at {size}²"))
            print(f"measured {model} at {size}²", file=sys.stderr, flush=True)
    print_report(rows, args)


if __name__ == "__main__":
    main()
