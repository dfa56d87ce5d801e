"""What checkpoint_latest.pth every epoch costs: time per epoch with it and with nnU-Net's default (every 50).

Usage: python benchmarks/checkpoint_overhead.py [--epochs 4] [--iterations 5] [--device cpu|cuda] [--shape 32 64 64]

One run: a synthetic 3D dataset in a temporary folder, planned with nnU-Net's default planner (3d_fullres), then
``nnUNetTrainerPreemptible`` (nnU-Net's default network and recipe) trained twice in this process, the same number
of short epochs each: once with the package default (``NNUNET_EXT_CHECKPOINT_EVERY=1``: an atomic, fsynced
checkpoint_latest.pth after every epoch) and once with nnU-Net's ``save_every = 50`` (no intermediate checkpoint in
a short run). Time per epoch is taken between the starts of consecutive epochs from nnU-Net's own log, so it
includes the checkpoint write (nnU-Net's "Epoch time" line does not). It also times single atomic writes of the
checkpoint and scales the overhead to nnU-Net's standard epoch of 250 training iterations.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _set_up(root: Path, shape: list[int]) -> None:
    paths = {name: str(root / name) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    os.environ.update(paths, nnUNet_def_n_proc="1", nnUNet_compile="f")
    os.environ.setdefault("nnUNet_n_proc_DA", "2")
    from nnunet_ext.synthetic import make_synthetic_dataset

    make_synthetic_dataset(999, dim=3, num_cases=6, num_test_cases=0, shape=tuple(shape), raw_dir=paths["nnUNet_raw"],
                           name="CheckpointBenchmark")
    subprocess.run([str(Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"), "-d", "999", "-c",
                    "3d_fullres", "-np", "1", "-npfp", "1"], check=True, env=os.environ, stdout=subprocess.DEVNULL)


def _train(every: int, epochs: int, iterations: int, device: str):
    """Train ``epochs`` short epochs writing checkpoint_latest.pth every ``every`` epochs; return the trainer."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import join, load_json
    from nnunetv2.paths import nnUNet_preprocessed

    from nnunet_ext.trainers import nnUNetTrainerPreemptible

    os.environ["NNUNET_EXT_CHECKPOINT_EVERY"] = str(every)
    folder = join(nnUNet_preprocessed, "Dataset999_CheckpointBenchmark")
    plans = load_json(join(folder, "nnUNetPlans.json"))
    plans["continue_training"] = False
    trainer_class = type(f"Benchmark_every{every}", (nnUNetTrainerPreemptible,), {})
    trainer = trainer_class(plans, "3d_fullres", 0, load_json(join(folder, "dataset.json")), torch.device(device))
    trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch = epochs, iterations, 2
    trainer.run_training()
    return trainer


def _seconds_per_epoch(trainer) -> float:
    starts = trainer.logger.get_value("epoch_start_timestamps", step=None)
    # the first epoch also warms up the loaders; the last one writes checkpoint_final.pth in both runs
    return (starts[-1] - starts[1]) / (len(starts) - 2)


def main() -> None:
    import torch  # nnU-Net reads its folders when nnunetv2 is imported, so that import waits for _set_up

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (>= 3)")
    parser.add_argument("--iterations", type=int, default=5, help="training iterations per epoch")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", type=int, nargs=3, default=[32, 64, 64], help="synthetic image size (z y x)")
    args = parser.parse_args()
    if args.epochs < 3:
        parser.error("--epochs must be at least 3 (the first and last epochs are not timed)")

    with tempfile.TemporaryDirectory(prefix="nnunet_ext_checkpoint_bench_") as tmp:
        _set_up(Path(tmp), args.shape)
        from nnunet_ext.architectures.profiling import count_parameters

        torch.set_num_threads(os.cpu_count() or 1)
        with_checkpoints = _train(1, args.epochs, args.iterations, args.device)
        without = _train(50, args.epochs, args.iterations, args.device)
        per_epoch_with, per_epoch_without = _seconds_per_epoch(with_checkpoints), _seconds_per_epoch(without)

        latest = os.path.join(with_checkpoints.output_folder, "checkpoint_latest.pth")
        writes = []
        for _ in range(3):
            start = time.perf_counter()
            with_checkpoints.save_checkpoint(latest)
            writes.append(time.perf_counter() - start)
        write = sorted(writes)[1]
        size_mb = os.path.getsize(latest) / 2 ** 20
        parameters = count_parameters(with_checkpoints.network)
        iteration = per_epoch_without / (args.iterations + 2)  # training and validation iterations alike

    patch = with_checkpoints.configuration_manager.patch_size
    print(f"\nnnU-Net's default network for 3d_fullres, patch {list(patch)}, batch "
          f"{with_checkpoints.batch_size}, {parameters:,} parameters; device {args.device}; "
          f"{args.epochs} epochs x {args.iterations} iterations per run")
    print(f"time per epoch, checkpoint_latest.pth every epoch : {per_epoch_with:8.2f} s")
    print(f"time per epoch, nnU-Net's every 50 epochs         : {per_epoch_without:8.2f} s")
    print(f"ratio (every epoch / every 50)                    : {per_epoch_with / per_epoch_without:8.3f}")
    print(f"one atomic checkpoint write ({size_mb:.0f} MB, fsync incl.) : {write:8.2f} s (median of 3)")
    standard = 250 * iteration + 50 * iteration
    print(f"overhead at nnU-Net's standard epoch (250 + 50 iterations at {iteration:.2f} s): "
          f"{write / standard:.2%} of the epoch")


if __name__ == "__main__":
    main()
