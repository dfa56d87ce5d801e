"""Synthetic data -> plan -> train -> predict -> Dice table, on CPU.

Every step is a stock nnU-Net command: a synthetic 3D dataset, nnUNetv2_plan_and_preprocess, nnUNetv2_train of each
trainer's _Demo variant (the same step budget for all), nnUNetv2_predict on the held-out cases and nnU-Net's
evaluation. Writes WORKDIR/demo_results.md and demo_results.json (Dice per label, training time, parameters per
trainer) and demo_log.txt; reuses what it trained before. Duration on 2 CPU cores, as the README measures: about 4
minutes per trainer (the SegFormer3D variant alone: 242 s), 9 more with --baseline; --quick about a minute per
trainer.
"""
from __future__ import annotations

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="nnunet_ext_demo",
                        help="working folder; holds nnUNet_raw/preprocessed/results unless those are set already")
    parser.add_argument("--quick", action="store_true", help="a smoke run of about a minute: 2 iterations per trainer")
    parser.add_argument("--trainers", nargs="+", default=None,
                        help="full-length trainer names to train (default: all of nnunet-ext's 3D trainers)")
    parser.add_argument("--baseline", action="store_true",
                        help="also train nnU-Net's default trainer with the same step budget (about 9 more minutes "
                             "on 2 CPU cores: its network costs 3x more per step there)")
    parser.add_argument("--dataset-id", type=int, default=501, help="nnU-Net dataset id of the demo's data")
    parser.add_argument("--overwrite", action="store_true", help="retrain and re-predict instead of reusing results")


def command(args: argparse.Namespace) -> None:
    from nnunet_ext.demo import run_demo

    run_demo(workdir=args.workdir, quick=args.quick, trainer_names=args.trainers, baseline=args.baseline,
             dataset_id=args.dataset_id, overwrite=args.overwrite)
