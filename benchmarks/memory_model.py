"""The memory model (``nnunet_ext.architectures.memory``) against measured memory of real training steps on CPU.

One command: for every network at three patch sizes (batch 2), the predicted peak memory of one training step
(``estimate_training_memory``, fp32, ``device_type="cpu"``) against the measured peak of a real step (forward, loss,
backward, nnU-Net's SGD step, after one warm-up step that creates the optimizer state), their ratio and whether it
is within ±15 %; then, per network at its middle patch, time and memory with activation checkpointing off and on.

Measured peak: each case runs in a fresh subprocess (``memory.measure_training_memory``). Tensor memory is what
the model predicts and what ``torch.cuda.max_memory_allocated`` reports on a GPU, so it is measured the same way on
CPU: the bytes of the parameters and buffers plus the peak of the running sum of every allocation and free of
PyTorch's CPU allocator over two training steps, as ``torch.profiler`` (``profile_memory=True``) records them. The
process' RSS is not used: it also holds the C library's allocator slack and pages never touched, which no tensor
accounts for. CPU time per step includes the profiler's overhead (the same with checkpointing on and off).

Networks (3D at 1 channel unless noted, 3 classes, deep supervision on where the network has it):
  PlainConvUNet        nnU-Net's default 3D U-Net for the patch, the baseline (trainers.plain_conv_unet)
  SegFormer3DVariant   defaults
  S2CANet              built for the patch, 4 channels
  RECUNet              2D, the original's widths
  RccSegmentor         2D, --rcc-backbone (default pvt_v2_b2, the original's)
  RccSegmentorLight    2D, the same backbone

Usage:
  python benchmarks/memory_model.py                       # everything: about 40 minutes on 2 busy CPU cores
  python benchmarks/memory_model.py --networks S2CANet RECUNet --skip-checkpointing
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from torch import nn

from harness import run_worker

PATCHES = {
    "PlainConvUNet": [(32, 32, 32), (48, 48, 48), (64, 64, 64)],
    "SegFormer3DVariant": [(32, 64, 64), (32, 96, 96), (48, 96, 96)],
    "S2CANet": [(32, 32, 32), (40, 40, 40), (48, 48, 48)],
    "RECUNet": [(96, 96), (128, 128), (192, 192)],
    "RccSegmentor": [(96, 96), (128, 128), (192, 192)],
    "RccSegmentorLight": [(96, 96), (128, 128), (192, 192)],
}
CHANNELS = {"S2CANet": 4}
CLASSES = 3
BATCH = 2
TOLERANCE = 0.15


def build(name: str, patch: tuple[int, ...], checkpointing: bool, backbone: str) -> nn.Module:
    """The network ``name`` for ``patch``, as its trainer builds it (deep supervision on)."""
    from nnunet_ext import architectures as nets

    channels = CHANNELS.get(name, 1)
    if name == "PlainConvUNet":
        from nnunet_ext.trainers.plain_conv_unet import default_plain_conv_unet

        return default_plain_conv_unet(list(patch), channels, CLASSES, deep_supervision=True)[0]
    keywords = {"activation_checkpointing": checkpointing}
    if name == "S2CANet":
        keywords["patch_size"] = patch
    if name.startswith("RccSegmentor"):
        keywords["backbone"] = backbone
    return getattr(nets, name)(channels, CLASSES, True, **keywords)


def input_shape(name: str, patch: tuple[int, ...]) -> tuple[int, ...]:
    return (BATCH, CHANNELS.get(name, 1), *patch)


def measure(name: str, patch: tuple[int, ...], checkpointing: bool, backbone: str) -> dict:
    """In a fresh subprocess: measured peak tensor memory and process CPU time per step of two real training
    steps (``measure_training_memory``)."""
    from nnunet_ext.architectures.memory import measure_training_memory

    torch.manual_seed(0)
    network = build(name, patch, checkpointing, backbone)
    start = time.process_time()
    measured = measure_training_memory(network, input_shape(name, patch))
    return {"measured": measured, "cpu_s": (time.process_time() - start) / 2}


def predict(name: str, patch: tuple[int, ...], checkpointing: bool, backbone: str) -> dict:
    from nnunet_ext.architectures.memory import estimate_training_memory

    start = time.perf_counter()
    memory = estimate_training_memory(lambda: build(name, patch, checkpointing, backbone), input_shape(name, patch),
                                      precision="fp32", device_type="cpu")
    return {"predicted": memory.peak, "predict_s": time.perf_counter() - start}


def run_case(name: str, patch: tuple[int, ...], checkpointing: bool, backbone: str) -> dict:
    """Prediction and measurement, each in its own fresh subprocess."""
    row = {"network": name, "patch": list(patch), "checkpointing": checkpointing}
    for worker in ("predict", "measure"):
        argv = ["--rcc-backbone", backbone] + (["--checkpointing"] if checkpointing else [])
        row.update(run_worker(__file__, argv, [worker, name, json.dumps(list(patch))], f"{worker} {name} {patch}",
                              stderr_tail=3000))
    row["ratio"] = row["predicted"] / row["measured"]
    return row


def print_validation(rows: list[dict]) -> None:
    print(f"predicted vs measured peak memory of one training step (fp32, CPU, batch {BATCH}, {CLASSES} classes)")
    header = (f"{'network':<19} {'patch':<12} {'predicted MiB':>13} {'measured MiB':>12} {'ratio':>6} "
              f"{'±15%':>5} {'predict s':>9}")
    print(header)
    print("-" * len(header))
    for row in rows:
        within = "yes" if abs(row["ratio"] - 1) <= TOLERANCE else "NO"
        print(f"{row['network']:<19} {'x'.join(map(str, row['patch'])):<12} {row['predicted'] / 2 ** 20:>13.0f} "
              f"{row['measured'] / 2 ** 20:>12.0f} {row['ratio']:>6.3f} {within:>5} {row['predict_s']:>9.1f}")


def print_checkpointing(pairs: list[tuple[dict, dict]]) -> None:
    print("\nactivation checkpointing (measured; one training step, process CPU time)")
    header = (f"{'network':<19} {'patch':<12} {'MiB off':>8} {'MiB on':>8} {'memory':>7} {'CPU s off':>9} "
              f"{'CPU s on':>8} {'time':>6} {'predicted on/off':>16}")
    print(header)
    print("-" * len(header))
    for off, on in pairs:
        print(f"{off['network']:<19} {'x'.join(map(str, off['patch'])):<12} {off['measured'] / 2 ** 20:>8.0f} "
              f"{on['measured'] / 2 ** 20:>8.0f} {on['measured'] / off['measured']:>7.3f} {off['cpu_s']:>9.2f} "
              f"{on['cpu_s']:>8.2f} {on['cpu_s'] / off['cpu_s']:>6.3f} {on['predicted'] / off['predicted']:>16.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", nargs="+", choices=list(PATCHES), default=list(PATCHES))
    parser.add_argument("--rcc-backbone", default="pvt_v2_b2", help="PVTv2 variant of the RccSegmentors")
    parser.add_argument("--skip-checkpointing", action="store_true", help="leave out the checkpointing table")
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "NETWORK", "PATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, name, patch = args.worker
        worker = predict if kind == "predict" else measure
        print(json.dumps(worker(name, tuple(json.loads(patch)), args.checkpointing, args.rcc_backbone)))
        return
    rows, pairs = [], []
    for name in args.networks:
        for patch in PATCHES[name]:
            rows.append(run_case(name, patch, False, args.rcc_backbone))
            print(f"measured {json.dumps(rows[-1])}", file=sys.stderr)
        if not args.skip_checkpointing and name != "PlainConvUNet":
            middle = PATCHES[name][1]
            on = run_case(name, middle, True, args.rcc_backbone)
            print(f"measured {json.dumps(on)}", file=sys.stderr)
            pairs.append((next(r for r in rows if r["network"] == name and tuple(r["patch"]) == middle), on))
    print_validation(rows)
    if pairs:
        print_checkpointing(pairs)


if __name__ == "__main__":
    main()
