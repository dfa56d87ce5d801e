"""nnU-Net's planning with the trainer's own training memory.

Runs nnU-Net's ExperimentPlanner for DATASET with the trainer's predicted training-step memory in place of
PlainConvUNet's heuristic, so that patch and batch size fill -gpu_memory_target for this network. Writes
nnUNet_preprocessed/<Dataset>/<plans name>.json (reusing nnUNetPlans' preprocessed data; existing plans only with
--overwrite), and prints the planned patch, batch and predicted memory per configuration and the nnUNetv2_train
command that uses them.
"""
from __future__ import annotations

import argparse
import json


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", dest="dataset", required=True, help="dataset id or name (its fingerprint must exist)")
    parser.add_argument("-tr", dest="trainer", required=True, help="trainer name (nnunet-ext's or a plug-in's)")
    parser.add_argument("-c", dest="configurations", nargs="+", default=None, choices=("2d", "3d_fullres"),
                        help="configurations to plan (default: those of 2d and 3d_fullres the trainer supports)")
    parser.add_argument("-gpu_memory_target", type=float, default=8.0,
                        help="GPU memory one training step may use, in GB (default 8, as nnU-Net)")
    parser.add_argument("--precision", choices=("amp", "fp32"), default="amp",
                        help="amp: autocast, as nnU-Net trains on CUDA (default); fp32: no autocast (CPU)")
    parser.add_argument("--checkpointing", choices=("auto", "on", "off"), default="auto",
                        help="activation checkpointing: auto uses it only where it buys a larger patch (default)")
    parser.add_argument("-overwrite_plans_name", dest="plans_name", default=None,
                        help="plans identifier (default nnUNetPlans_<network>_<G>G)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing plans of that name")


def command(args: argparse.Namespace) -> None:
    from nnunet_ext.planning import format_table, plan

    plans_file, plans = plan(args.dataset, args.trainer, args.configurations, args.gpu_memory_target, args.precision,
                             args.checkpointing, args.plans_name, args.overwrite)
    folder = plans_file.parent
    reference_file = folder / "nnUNetPlans.json"
    reference = json.loads(reference_file.read_text()) if reference_file.is_file() else None
    print(format_table(plans, reference))
    print(f"\nWrote {plans_file}")
    dataset_id = int(plans["dataset_name"][7:10])
    for name, settings in plans["configurations"].items():
        data = folder / settings["data_identifier"]
        if data.is_dir():
            print(f"{name}: reuses the preprocessed data in {data}")
        else:
            print(f"{name}: not preprocessed yet; run: nnUNetv2_preprocess -d {dataset_id} -plans_name "
                  f"{plans['plans_name']} -c {name}")
        print(f"Train: nnUNetv2_train {dataset_id} {name} 0 -tr {args.trainer} -p {plans['plans_name']}")
