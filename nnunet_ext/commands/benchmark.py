"""Compare trainers' cross-validation results.

Per label or region: Dice (nnU-Net's summary.json), HD95 and normalised surface distance from the saved validation
predictions; cost (parameters, FLOPs, time per epoch and case); each trainer against --reference (Wilcoxon and
Holm-adjusted p, bootstrap confidence interval of the Dice difference). Writes OUT/benchmark.md, benchmark.csv,
benchmark_cases.csv and benchmark.png (--ensemble: adds nnU-Net's find_best_configuration).
"""
from __future__ import annotations

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from nnunetv2.configuration import default_num_processes

    from nnunet_ext.benchmarking.evaluation import DEFAULT_NSD_TOLERANCE_MM
    from nnunet_ext.benchmarking.results import ALL_FOLDS
    from nnunet_ext.benchmarking.run import DEFAULT_REFERENCE
    from nnunet_ext.surface_metrics import DEFAULT_SURFACE_DEFINITION, SURFACE_DEFINITIONS

    parser.add_argument("-d", dest="dataset", required=True, help="dataset id or name")
    parser.add_argument("-c", dest="configurations", nargs="+", required=True, help="configuration(s)")
    parser.add_argument("-tr", dest="trainers", nargs="+", required=True, help="trainer names (ours or nnU-Net's)")
    parser.add_argument("-p", dest="plans", default=None,
                        help="plans identifier (default: the one the results use; several are refused)")
    parser.add_argument("-o", dest="output", required=True, help="output folder for benchmark.md/.csv/.png")
    parser.add_argument("-f", dest="folds", nargs="+", default=list(ALL_FOLDS), help="folds to include")
    parser.add_argument("--reference", default=None,
                        help=f"trainer the others are compared with (default: {DEFAULT_REFERENCE}, if it has results)")
    parser.add_argument("--nsd-tolerance", type=float, default=DEFAULT_NSD_TOLERANCE_MM,
                        help=f"NSD tolerance in mm (default {DEFAULT_NSD_TOLERANCE_MM:g})")
    parser.add_argument("--surface-definition", choices=SURFACE_DEFINITIONS, default=DEFAULT_SURFACE_DEFINITION,
                        help="surfaces for HD95 and NSD: 'element' (default), the area-weighted surface elements "
                             "on the voxel faces of Nikolov et al. and DeepMind's surface-distance (the published "
                             "figures); "
                             "'voxel', the boundary voxels, each weighted 1 (MONAI's default)")
    parser.add_argument("--ensemble", action="store_true",
                        help="also run nnU-Net's find_best_configuration (best single model or ensemble)")
    parser.add_argument("-np", dest="processes", type=int, default=default_num_processes,
                        help="processes measuring the cases, and for --ensemble's nnUNetv2_find_best_configuration "
                             f"(default: nnU-Net's, {default_num_processes}; environment variable nnUNet_def_n_proc)")
    parser.add_argument("--overwrite", action="store_true", help="replace the benchmark files in the -o folder")


def command(args: argparse.Namespace) -> None:
    from nnunet_ext.benchmarking.run import run_benchmark

    run_benchmark(args.dataset, args.configurations, args.trainers, args.output, plans=args.plans,
                  reference=args.reference, folds=args.folds, tolerance_mm=args.nsd_tolerance,
                  ensemble=args.ensemble, processes=args.processes, overwrite=args.overwrite,
                  definition=args.surface_definition)
