"""One-command GPU check of every trainer: planned memory against measured memory, speed against nnU-Net's default.

For each full-length trainer of nnunet-ext and for nnU-Net's ``nnUNetTrainer``, on a synthetic dataset made here:

1. plan: nnUNetPlans for the baseline; ``nnunet-ext plan`` (the trainer's own memory model, ``--gpu-memory-target``,
   ``amp`` on CUDA, ``fp32`` on CPU) for ours;
2. train: the trainer itself (nnU-Net's ``initialize``, loss, optimizer, autocast and grad scaler on CUDA, its
   ``train_step``) on random batches of the planned patch and batch size, a few warm-up steps then timed steps,
   eager and with ``torch.compile`` (nnU-Net's ``nnUNet_compile``);
3. report: measured peak ``torch.cuda.max_memory_allocated`` of the steps against the plan's predicted memory,
   iterations and voxels per second against ``nnUNetTrainer``.

Then RccSegmentor's inference rate at 352² in fp16 (the paper claims 136 slices/s) and the deformable convolution
against ``conv3d`` (``deformable_conv3d.py``).

Usage:
  python benchmarks/gpu_check.py                        # CUDA, under 8 minutes on one GPU
  python benchmarks/gpu_check.py --device cpu --quick   # the same code path on tiny data (the test suite runs it)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from harness import run_worker

DATASET_ID = 777
FULL_SHAPE = (96, 192, 192)  # a CT-like volume: planning gives each network its own full-size patch
QUICK_SHAPE = (16, 32, 32)


def _set_up(workdir: Path, quick: bool) -> None:
    """Synthetic dataset, planned and preprocessed by nnU-Net (the trainers' initialize reads the preprocessed
    folder; the batches themselves are random)."""
    import subprocess

    from nnunet_ext.synthetic import make_synthetic_dataset

    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[name] = str(workdir / name)
        (workdir / name).mkdir(parents=True, exist_ok=True)
    make_synthetic_dataset(DATASET_ID, dim=3, num_cases=5, num_test_cases=0,
                           shape=QUICK_SHAPE if quick else FULL_SHAPE, overwrite=True)
    subprocess.run(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "2d", "3d_fullres", "-np", "2",
                    "-npfp", "2"], check=True, capture_output=True)


def _batch(trainer, batch_size: int, device) -> dict:
    """A random batch as nnU-Net's loader gives it: data, and one label target per deep-supervision scale."""
    import torch

    patch = list(trainer.configuration_manager.patch_size)
    scales = trainer._get_deep_supervision_scales() or [[1.0] * len(patch)]
    classes = len(trainer.label_manager.all_labels)
    data = torch.randn(batch_size, trainer.num_input_channels, *patch, device=device)
    targets = [torch.randint(0, classes, (batch_size, 1, *[round(p * s) for p, s in zip(patch, scale)]),
                             device=device).float() for scale in scales]
    return {"data": data, "target": targets if trainer.enable_deep_supervision else targets[0]}


def measure_training(trainer_name: str, plans_name: str, configuration: str, device_type: str, steps: int,
                     warmup: int, compile_network: bool) -> dict:
    """Steps of the trainer's own train_step at its plan; seconds per step and peak CUDA memory."""
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    os.environ["nnUNet_compile"] = "t" if compile_network else "f"
    device = torch.device(device_type)
    # built as nnUNetv2_train builds it (nnU-Net's lookup finds ours through nnUNet_extTrainer)
    trainer = get_trainer_from_args(str(DATASET_ID), configuration, 0, trainer_name, plans_name, device=device)
    trainer.initialize()
    batch_size = trainer.configuration_manager.batch_size
    batch = _batch(trainer, batch_size, device)
    times = []
    for index in range(warmup + steps):
        if index == warmup and device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        trainer.train_step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if index >= warmup:
            times.append(time.perf_counter() - start)
    patch = list(trainer.configuration_manager.patch_size)
    planned = trainer.plans_manager.get_configuration(configuration).configuration.get("nnunet_ext", {})
    return {"trainer": trainer_name, "compiled": compile_network, "patch": patch, "batch": batch_size,
            "step_s": statistics.median(times),
            "voxels_per_s": batch_size * float(torch.tensor(patch).prod()) / statistics.median(times),
            "peak_gb": torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None,
            "predicted_gb": planned.get("predicted_memory_gb")}


def rcc_slices_per_second(device_type: str, size: int, batch: int, steps: int, warmup: int) -> float:
    """RccSegmentor forward passes (eval, autocast fp16 on CUDA), slices per second."""
    import torch

    from nnunet_ext.architectures import RccSegmentor

    device = torch.device(device_type)
    network = RccSegmentor(1, 3).to(device).eval()
    x = torch.randn(batch, 1, size, size, device=device)
    cuda = device.type == "cuda"
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
        for _ in range(warmup):
            network(x)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            network(x)
        if cuda:
            torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def _plan_all(device_type: str, target_gb: float) -> list[tuple[str, str, str]]:
    """(trainer, plans name, configuration) of every run; ours planned with their own memory model."""
    from nnunet_ext import planning
    from nnunet_ext.catalog import supported_configurations
    from nnunet_ext.trainers import TRAINERS

    runs = [("nnUNetTrainer", "nnUNetPlans", "3d_fullres"), ("nnUNetTrainer", "nnUNetPlans", "2d")]
    for trainer in TRAINERS:
        configuration = "3d_fullres" if "3d_fullres" in supported_configurations(trainer) else "2d"
        plans_file, _ = planning.plan(str(DATASET_ID), trainer.__name__, [configuration], target_gb,
                                      precision="amp" if device_type == "cuda" else "fp32", overwrite=True)
        runs.append((trainer.__name__, plans_file.stem, configuration))
    return runs


def _ratio(value: float | None, reference: float | None) -> str:
    return f"{value / reference:.2f}" if value and reference else "-"


def training_table(rows: list[dict]) -> str:
    baseline = {(r["configuration"], r["compiled"]): r for r in rows if r["trainer"] == "nnUNetTrainer"}
    lines = ["| trainer | configuration | patch | batch | compiled | predicted GB | measured GB | measured / predicted "
             "| s / step | it/s vs nnUNetTrainer | voxels/s vs nnUNetTrainer |", "|" + "---|" * 11]
    for r in rows:
        base = baseline.get((r["configuration"], r["compiled"]))
        fmt = (lambda v: f"{v:.2f}" if v is not None else "-")
        lines.append(f"| {r['trainer']} | {r['configuration']} | {'x'.join(map(str, r['patch']))} | {r['batch']} | "
                     f"{'yes' if r['compiled'] else 'no'} | {fmt(r['predicted_gb'])} | {fmt(r['peak_gb'])} | "
                     f"{_ratio(r['peak_gb'], r['predicted_gb'])} | {r['step_s']:.3f} | "
                     f"{_ratio(base and base['step_s'], r['step_s'])} | "
                     f"{_ratio(r['voxels_per_s'], base and base['voxels_per_s'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny data, one timed step: a smoke run of the check")
    parser.add_argument("--gpu-memory-target", type=float, default=8.0, help="GB, as nnU-Net's -gpu_memory_target")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile runs")
    parser.add_argument("--workdir", default=None, help="nnU-Net folders (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure_training(**json.loads(args.worker))))
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="nnunet_ext_gpu_check_"))
    started = time.perf_counter()
    _set_up(workdir, args.quick)
    steps, warmup = (1, 0) if args.quick else (10, 3)
    compiled = [False] if args.no_compile or args.device == "cpu" else [False, True]
    rows = []
    for trainer, plans, configuration in _plan_all(args.device, args.gpu_memory_target):
        for compile_network in compiled:
            spec = {"trainer_name": trainer, "plans_name": plans, "configuration": configuration,
                    "device_type": args.device, "steps": steps, "warmup": warmup, "compile_network": compile_network}
            # a fresh process per CUDA run: its own peak-memory statistics and compile caches
            row = (measure_training(**spec) if args.quick
                   else run_worker(__file__, [], [json.dumps(spec)], f"{trainer} {configuration}", stderr_tail=3000))
            rows.append({**row, "configuration": configuration})
            print(f"  {trainer} {configuration}{' compiled' if compile_network else ''}: {row['step_s']:.3f} s/step",
                  flush=True)
    print("\n" + training_table(rows))

    rcc_size, rcc_batch = (32, 2) if args.quick else (352, 16)
    rcc_steps, rcc_warmup = (1, 0) if args.quick else (20, 2)
    rcc = rcc_slices_per_second(args.device, rcc_size, rcc_batch, rcc_steps, rcc_warmup)
    print(f"\nRccSegmentor inference at {rcc_size}² ({'fp16' if args.device == 'cuda' else 'fp32'}, batch "
          f"{rcc_batch}): {rcc:.1f} slices/s; the paper claims 136 slices/s at 352² (ratio {rcc / 136:.2f})")

    import deformable_conv3d

    conv_args = ["--device", args.device, *(["--size", "8", "--steps", "1", "--warmup", "0"] if args.quick else [])]
    conv = {v: run_worker(deformable_conv3d.__file__, conv_args, [v], v, stderr_tail=3000)
            for v in ("conv3d", "grid_sample")}
    print(f"Deformable convolution (one grid_sample) / conv3d, fwd+bwd: time "
          f"{conv['grid_sample']['step_s'] / conv['conv3d']['step_s']:.2f}x, memory "
          f"{_ratio(conv['grid_sample']['peak_bytes'], conv['conv3d']['peak_bytes'])}x")
    print(f"\nDone in {time.perf_counter() - started:.0f} s (nnU-Net folders in {workdir}).")
    if args.out:
        Path(args.out).write_text(json.dumps({"training": rows, "rcc_slices_per_s": rcc, "deformable_conv": conv},
                                             indent=1))


if __name__ == "__main__":
    main()
