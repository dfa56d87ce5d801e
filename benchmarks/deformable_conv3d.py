"""3D deformable convolution (blocks.DeformableConv, one grid_sample over all taps) against a plain conv3d of the
same shape and against the gather formulation of the original S2CA-Net code: forward+backward time and peak memory.

One command; each variant runs in its own fresh subprocess (CPU peak memory = growth of the process' peak RSS over
the timed steps; CUDA = torch.cuda.max_memory_allocated above what was allocated before them). Inputs, weights and
offsets all require gradients. The default shape is S2CA-Net's MS-ADC at the 128³ patch scaled down for CPU:
8 sampled channels, 96 outputs, kernel 3, at 32³ (CPU) or 64³ (CUDA, the original's size).

Variants:
  conv3d         nn.functional.conv3d, kernel 3, padding 1 (what a deformable conv is with zero offsets)
  grid_sample    this package: offsets → one grid of all 27 taps → one F.grid_sample → 1×1×1 conv over C·27
  grid_sample_floor  the same with the original's border rule (border="floor", S2CANet(original_compatible=True))
  gather         the original's formulation (written here from its description): floor/ceil neighbour indices
                 per tap, 8 int64 index tensors and 8 gathered value tensors of size (B, C, D, H, W, 27),
                 trilinear weights, border snapping and clamping, then the same 1×1×1 conv

Usage (needs nnunet-ext installed, or its source on PYTHONPATH):
  python benchmarks/deformable_conv3d.py                 # CPU, 1x8x32^3 -> 96 channels, ~1 min
  python benchmarks/deformable_conv3d.py --size 64       # the original's 64^3 on CPU (gather needs several GB)
  python benchmarks/deformable_conv3d.py --device cuda   # 64^3, fp32
"""
from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F

from harness import (add_run_arguments, measure_calls, peak_mib_column, print_table, ratios_text,
                     resolve_run_arguments, run_worker)

VARIANTS = ("conv3d", "grid_sample", "grid_sample_floor", "gather")


def gather_deformable_samples(x: torch.Tensor, offsets: torch.Tensor, kernel_size: int = 3,
                              dilation: int = 1) -> torch.Tensor:
    """The original's sampling: (B, C, D, H, W) and (B, 3·K, D, H, W) offsets (axis-major) → (B, C·K, D, H, W).

    Positions live in the 1-voxel zero-padded volume; neighbour indices are detached, clamped to it; positions in
    the padding margin are snapped to their floor and all positions clamped before the trilinear weights.
    """
    if dilation != 1:
        raise ValueError("the original's formulation has no dilation")
    batch, channels = x.shape[:2]
    num_taps = kernel_size ** 3
    padded = F.pad(x, (1,) * 6)
    size = padded.shape[2:]
    out_size = x.shape[2:]
    half = kernel_size // 2
    steps = torch.arange(-half, half + 1, device=x.device, dtype=x.dtype)
    taps = torch.stack(torch.meshgrid(steps, steps, steps, indexing="ij"), 0).reshape(3, num_taps)
    grids = torch.meshgrid(*(torch.arange(1, s + 1, device=x.device, dtype=x.dtype) for s in out_size),
                           indexing="ij")
    # (B, D, H, W, K) per axis
    positions = [(grids[a][..., None] + taps[a] + offsets[:, a * num_taps:(a + 1) * num_taps].permute(0, 2, 3, 4, 1))
                 for a in range(3)]
    lower = [p.detach().floor() for p in positions]
    lower_index = [low.clamp(0, s - 1).long() for low, s in zip(lower, size)]
    upper_index = [(low + 1).clamp(0, s - 1).long() for low, s in zip(lower, size)]
    snapped = []
    for p, s in zip(positions, size):
        margin = ((p < 1) | (p > s - 2)).to(p.dtype).detach()
        snapped.append((p * (1 - margin) + p.floor() * margin).clamp(0, s - 1))
    flat = padded.reshape(batch, channels, -1)
    result = 0
    for corner in range(8):
        index_per_axis = [upper_index[a] if corner >> (2 - a) & 1 else lower_index[a] for a in range(3)]
        weight = 1
        for a in range(3):
            distance = index_per_axis[a].to(x.dtype) - snapped[a]
            weight = weight * (1 - distance if corner >> (2 - a) & 1 else 1 + distance)
        index = (index_per_axis[0] * size[1] + index_per_axis[1]) * size[2] + index_per_axis[2]
        index = index.reshape(batch, 1, -1).expand(-1, channels, -1)
        values = flat.gather(-1, index).view(batch, channels, *out_size, num_taps)
        result = result + weight.unsqueeze(1) * values
    return result.permute(0, 1, 5, 2, 3, 4).reshape(batch, channels * num_taps, *out_size)


def measure(variant: str, args: argparse.Namespace) -> dict:
    from nnunet_ext.architectures.blocks import deformable_sample

    torch.manual_seed(0)
    device = torch.device(args.device)
    size = [args.size] * 3
    x = torch.randn(args.batch, args.channels, *size, device=device, requires_grad=True)
    weight = (0.05 * torch.randn(args.out_channels, args.channels, 3, 3, 3, device=device)).requires_grad_()
    offsets = (0.5 * torch.randn(args.batch, 81, *size, device=device)).requires_grad_()
    projection = weight.view(args.out_channels, -1, 1, 1, 1)

    def forward() -> torch.Tensor:
        if variant == "conv3d":
            return F.conv3d(x, weight, padding=1)
        samples = (gather_deformable_samples(x, offsets, 3) if variant == "gather"
                   else deformable_sample(x, offsets, 3, border="floor" if variant.endswith("floor") else "zeros"))
        return F.conv3d(samples, projection)

    def step() -> None:
        for tensor in (x, weight, offsets):
            tensor.grad = None
        forward().square().mean().backward()

    timing = measure_calls(step, device, args.warmup, args.steps)
    check = None
    if variant.startswith("grid_sample"):  # agrees with gather: "zeros" away from the border, "floor" everywhere
        with torch.no_grad():
            small = [t[:, :, 1:-1, 1:-1, 1:-1] for t in (x, offsets)]
            if variant == "grid_sample":
                mine = deformable_sample(small[0], 0.2 * small[1].tanh(), 3)
                theirs = gather_deformable_samples(small[0], 0.2 * small[1].tanh(), 3)
                inner = (slice(None), slice(None), slice(2, -2), slice(2, -2), slice(2, -2))
                check = float((mine[inner] - theirs[inner]).abs().max())
            else:
                mine = deformable_sample(small[0], 4 * small[1], 3, border="floor")
                check = float((mine - gather_deformable_samples(small[0], 4 * small[1], 3)).abs().max())
    return {"variant": variant, **timing, "max_difference": check}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, help="cube edge (default 32 on CPU, 64 on CUDA)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--channels", type=int, default=8, help="sampled channels (S2CA-Net: 96 / 12 = 8)")
    parser.add_argument("--out-channels", type=int, default=96)
    add_run_arguments(parser, "steps", cpu_steps=5, cpu_warmup=1)
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cuda = resolve_run_arguments(args, cpu_steps=5, cpu_warmup=1)
    args.size = args.size or (64 if cuda else 32)
    if args.worker:
        print(json.dumps(measure(args.worker, args)))
        return

    rows = [run_worker(__file__, sys.argv[1:], [variant], variant, stderr_tail=3000) for variant in VARIANTS]
    threads = f", {torch.get_num_threads()} threads" if not cuda else ""
    print(f"device {args.device}{threads}; input {args.batch}x{args.channels}x{args.size}^3 -> {args.out_channels} "
          f"channels, kernel 3; fwd+bwd median of {args.steps} steps after {args.warmup} warm-up")
    print_table(rows, [("variant", "<17", lambda row: row["variant"]),
                       ("fwd+bwd s", ">10", lambda row: f"{row['step_s']:.4f}"),
                       ("CPU s", ">8", lambda row: f"{row['cpu_s']:.3f}"), peak_mib_column(10)], rule=False)
    by_name = {row["variant"]: row for row in rows}
    ours, plain, gather = by_name["grid_sample"], by_name["conv3d"], by_name["gather"]
    print()
    floor = by_name["grid_sample_floor"]
    for name, mine, other in (("grid_sample / conv3d", ours, plain), ("grid_sample / gather", ours, gather),
                              ("grid_sample_floor / grid_sample", floor, ours)):
        fields = [("time", "step_s"), ("CPU time", "cpu_s"), ("memory", "peak_bytes")]
        print(f"{name}: {ratios_text(mine, other, fields, digits=2, separator=', ', unit='x')}")
    print(f"max |grid_sample - gather| on interior samples: {ours['max_difference']:.2e}")
    print(f"max |grid_sample_floor - gather| on all samples, offsets up to ~8 voxels: {floor['max_difference']:.2e}")


if __name__ == "__main__":
    main()
