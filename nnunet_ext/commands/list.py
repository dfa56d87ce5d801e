"""The trainers, their networks, and whether nnU-Net can see them.

nnunet-ext's trainers, those of plug-in packages and those of the nnUNet_extTrainer folders: source, network,
dimensionality, configurations, parameters and short variants; --json for a machine-readable list.
"""
from __future__ import annotations

import argparse
import dataclasses
import json

from nnunet_ext import discovery


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the trainers as a JSON list")


def command(args: argparse.Namespace) -> None:
    from nnunet_ext.catalog import describe, listed_trainers

    rows = [describe(t) for t in listed_trainers()]  # nnunet-ext's, plug-in packages', nnUNet_extTrainer folders'
    if args.json:
        print(json.dumps({"trainers": [dataclasses.asdict(r) for r in rows],
                          "discovery": {"active": discovery.is_active(), "folder": str(discovery.TRAINER_LOOKUP_DIR)}},
                         indent=1))
        return
    header = ("trainer", "source", "network", "dim", "configurations", "parameters", "short variants")
    table = [header] + [(r.name, r.package, r.network, r.dims, r.configurations,
                         "-" if r.parameters is None else f"{r.parameters:,}", r.variants) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print("\nParameters at 1 input channel and 3 outputs, deep supervision heads included.")
    if discovery.is_active():
        print(f"Discovery: active. The stock nnUNetv2_* commands find these trainers, plug-ins' included "
              f"(nnUNet_extTrainer lists {discovery.TRAINER_LOOKUP_DIR}).")
    else:
        print("Discovery: INACTIVE in this environment (was Python started with -S, or the package not installed "
              "with pip?). Activate it by hand with:\n  " + discovery.export_line())
