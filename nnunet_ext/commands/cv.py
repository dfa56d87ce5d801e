"""Run the cross-validation folds of several trainers with nnUNetv2_train.

Each (trainer, fold) runs through nnU-Net's own nnUNetv2_train --npz, so that ensembling works later: finished folds
are skipped, interrupted ones resumed with --c, trained but unvalidated ones validated with --val; one fold per GPU
with --gpus. --dry-run prints the plan; --emit-slurm writes a SLURM array script instead. Outputs: nnU-Net's results
folders, and the state of every fold on the console.
"""
from __future__ import annotations

import argparse


EXIT_STATUSES = (0, 1, 2, 75)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", dest="dataset", required=True, help="dataset id or name")
    parser.add_argument("-c", dest="configurations", nargs="+", required=True, help="configuration(s), e.g. 3d_fullres")
    parser.add_argument("-tr", dest="trainers", nargs="+", required=True, help="trainer names (ours or nnU-Net's)")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    parser.add_argument("-f", dest="folds", nargs="+", default=["0", "1", "2", "3", "4"], help="folds, as nnUNetv2_train's")
    parser.add_argument("-device", dest="device", choices=("cuda", "cpu", "mps"), default=None,
                        help="nnUNetv2_train's -device (default: cuda if a GPU is visible, else cpu)")
    parser.add_argument("--gpus", default=None,
                        help="comma-separated GPU indices, e.g. 0,1: one fold per GPU at a time")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (state and command per fold) only")
    parser.add_argument("--emit-slurm", metavar="FILE", default=None,
                        help="write a SLURM array script (one unfinished fold per task) instead of running")
    parser.add_argument("--slurm-time", default="24:00:00", help="#SBATCH --time of each task (default 24:00:00)")
    parser.add_argument("--slurm-partition", default=None, help="#SBATCH --partition")
    parser.add_argument("--slurm-cpus", type=int, default=8, help="#SBATCH --cpus-per-task (default 8)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --emit-slurm file")
    parser.add_argument("--quiet", action="store_true",
                        help="show only progress lines of nnU-Net's output (the default with several GPUs)")


def command(args: argparse.Namespace) -> None:
    from nnunet_ext.crossval import run_cross_validation

    status = run_cross_validation(
        args.dataset, args.configurations, args.trainers, args.folds, plans=args.plans, device=args.device,
        gpus=args.gpus, dry_run=args.dry_run, emit_slurm=args.emit_slurm,
        slurm_options={"time_limit": args.slurm_time, "partition": args.slurm_partition, "cpus": args.slurm_cpus},
        verbose=False if args.quiet else None, overwrite=args.overwrite)
    if status:
        raise SystemExit(status)
