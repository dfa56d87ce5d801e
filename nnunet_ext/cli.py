"""The ``nnunet-ext`` command: synthetic data, the demo, and what the package offers.

Training and prediction use nnU-Net's own commands (``nnUNetv2_train ... -tr nnUNetTrainerSegFormer3DVariant``);
this command only adds what nnU-Net has no command for.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from nnunet_ext import __version__, discovery

DESCRIPTION = ("Published tumour-segmentation architectures as nnU-Net v2 trainers: what nnU-Net has no command for "
               "(planning for a network's own memory, cross-validation and benchmarking of several trainers, RCC "
               "detection, synthetic data, a demo). Training and prediction use nnU-Net's own commands.")


def _cmd_synth(args: argparse.Namespace) -> None:
    from nnunet_ext.synthetic import make_synthetic_dataset

    folder = make_synthetic_dataset(args.dataset_id, dim=args.dim, num_cases=args.cases,
                                    num_test_cases=args.test_cases, channels=args.channels, regions=args.regions,
                                    overwrite=args.overwrite, seed=args.seed,
                                    shape=tuple(args.shape) if args.shape else None)
    # after --overwrite an old fingerprint in nnUNet_preprocessed would be reused without --clean
    print(f"Wrote {folder}\nNext: nnUNetv2_plan_and_preprocess -d {args.dataset_id} "
          f"-c {'3d_fullres' if args.dim == 3 else '2d'}{' --clean' if args.overwrite else ''}")
    if args.cases < 5:
        print(f"Note: {args.cases} training cases allow only fold 'all'; 5-fold cross-validation needs 5 or more.")


def _cmd_list(args: argparse.Namespace) -> None:
    from nnunet_ext.catalog import describe, listed_trainers

    rows = [describe(t) for t in listed_trainers()]  # nnunet-ext's, plug-in packages', nnUNet_extTrainer folders'
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


def _cmd_demo(args: argparse.Namespace) -> None:
    from nnunet_ext.demo import run_demo

    run_demo(workdir=args.workdir, quick=args.quick, trainer_names=args.trainers, baseline=args.baseline,
             dataset_id=args.dataset_id, overwrite=args.overwrite)


def _cmd_check(args: argparse.Namespace) -> None:
    from nnunet_ext import checks
    from nnunet_ext.catalog import resolve_trainer

    paths = checks.require_nnunet_paths()
    print("ok  nnU-Net folders: " + ", ".join(f"{k}={v}" for k, v in paths.items()))
    dataset_name = checks.find_dataset(args.dataset, paths)
    print(f"ok  dataset {dataset_name}")
    plans = checks.load_plans(dataset_name, args.plans, args.configuration, paths)
    trainer = resolve_trainer(args.trainer)
    checks.check_trainer_configuration(trainer, plans, args.configuration)
    print(f"ok  {trainer.__name__} can train and predict configuration '{args.configuration}' of {args.plans}")
    _check_memory(args, trainer, plans, paths["nnUNet_preprocessed"] / dataset_name / "dataset.json")
    if args.input is not None:
        dataset_json = json.loads((paths["nnUNet_preprocessed"] / dataset_name / "dataset.json").read_text())
        cases = checks.check_input_channels(Path(args.input), dataset_json)
        print(f"ok  {cases} case(s) in {args.input} with the model's {len(dataset_json['channel_names'])} channel(s)")
    if not discovery.is_active():
        print("!!  trainer discovery is inactive in this environment; activate it with:\n    "
              + discovery.export_line())


def _check_memory(args: argparse.Namespace, trainer: type, plans: dict, dataset_json: Path) -> None:
    import torch

    from nnunet_ext import planning

    if not callable(getattr(trainer, "training_memory", None)):
        print(f"--  no predicted memory: {trainer.__name__} has no memory model (not built on nnUNetTrainerExt)")
        return
    memory, precision, patch, batch = planning.predicted_training_memory(
        trainer, plans, args.configuration, json.loads(dataset_json.read_text()))
    print(f"ok  predicted training memory {memory.peak_gb:.2f} GB ({precision}, patch {patch}, batch {batch})")
    limits = [(args.gpu_memory_target, f"-gpu_memory_target {args.gpu_memory_target:g} GB")] \
        if args.gpu_memory_target is not None else []
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_properties(torch.cuda.current_device())
        limits.append((gpu.total_memory / 1e9, f"the memory of the visible GPU ({gpu.name}, "
                                               f"{gpu.total_memory / 1e9:.1f} GB)"))
    for limit, name in limits:
        if memory.peak_gb > limit:
            print(f"!!  the predicted {memory.peak_gb:.2f} GB exceed {name}: plan for it with nnunet-ext plan "
                  f"-d {args.dataset} -tr {trainer.__name__} -gpu_memory_target {math.floor(limit * 10) / 10:g}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunet-ext", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write a synthetic nnU-Net raw dataset (organs with tumours) to $nnUNet_raw")
    synth.add_argument("dataset_id", type=int, help="dataset id, 1..999")
    synth.add_argument("--dim", type=int, choices=(2, 3), default=3)
    synth.add_argument("--cases", type=int, default=10, help="training cases (>= 5 for 5-fold cross-validation)")
    synth.add_argument("--test-cases", type=int, default=2, help="held-out cases in imagesTs/labelsTs")
    synth.add_argument("--channels", type=int, default=1, help="1 = CT-like, more = MRI-like sequences")
    synth.add_argument("--regions", action="store_true", help="region labels (organ incl. tumour, tumour)")
    synth.add_argument("--shape", type=int, nargs="+", default=None,
                       help="image size, z y x for 3D or y x for 2D, >= 16 per axis (default 32 64 64 / 96 96)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this id")
    synth.set_defaults(func=_cmd_synth)

    demo = sub.add_parser("demo", help="synthetic data -> plan -> train -> predict -> Dice table, on CPU (~4 min)")
    demo.add_argument("--workdir", default="nnunet_ext_demo",
                      help="working folder; holds nnUNet_raw/preprocessed/results unless those are set already")
    demo.add_argument("--quick", action="store_true", help="a smoke run of about a minute: 2 iterations per trainer")
    demo.add_argument("--trainers", nargs="+", default=None,
                      help="full-length trainer names to train (default: all of nnunet-ext's 3D trainers)")
    demo.add_argument("--baseline", action="store_true",
                      help="also train nnU-Net's default trainer with the same step budget (about 9 more minutes "
                           "on 2 CPU cores: its network costs 3x more per step there)")
    demo.add_argument("--dataset-id", type=int, default=501)
    demo.add_argument("--overwrite", action="store_true", help="retrain and re-predict instead of reusing results")
    demo.set_defaults(func=_cmd_demo)

    check = sub.add_parser("check", help="preflight: nnU-Net folders, dataset, plans, trainer vs configuration, "
                                         "input channels")
    check.add_argument("-d", dest="dataset", required=True, help="dataset id or name")
    check.add_argument("-c", dest="configuration", required=True)
    check.add_argument("-tr", dest="trainer", required=True)
    check.add_argument("-p", dest="plans", default="nnUNetPlans")
    check.add_argument("-i", dest="input", default=None, help="an input folder for nnUNetv2_predict")
    check.add_argument("-gpu_memory_target", type=float, default=None,
                       help="GB: say when the trainer's predicted training memory exceeds it (and the visible GPU's)")
    check.set_defaults(func=_cmd_check)

    from nnunet_ext import benchmarking, crossval, planning_cli

    planning_cli.configure_parser(sub.add_parser(
        "plan", help="nnU-Net's planning with the trainer's own training memory: patch and batch size for a GPU "
                     "memory target, written as new plans that reuse nnUNetPlans' preprocessed data"))

    crossval.configure_parser(sub.add_parser(
        "cv", help="run the cross-validation folds of several trainers with nnUNetv2_train (finished folds "
                   "skipped, interrupted ones resumed; one fold per GPU with --gpus; --emit-slurm)"))
    benchmarking.configure_parser(sub.add_parser(
        "benchmark", help="compare trainers' cross-validation results: Dice, HD95, NSD, cost, Wilcoxon tests; "
                          "writes benchmark.md/.csv/.png (--ensemble: nnU-Net's find_best_configuration)"))

    from nnunet_ext import detection_cli

    detect = sub.add_parser("detect", help="RCC detection: DICOM or images -> kidney and tumour segmentation with "
                                           "a trained model, per-side verdict, report.json, key-slice PNGs")
    detection_cli.add_detect_arguments(detect)
    detect.set_defaults(func=detection_cli.run_detect)
    dicom2nifti = sub.add_parser("dicom2nifti", help="convert DICOM series (one folder per case) to NIfTI")
    detection_cli.add_dicom2nifti_arguments(dicom2nifti)
    dicom2nifti.set_defaults(func=detection_cli.run_dicom2nifti)

    listing = sub.add_parser("list", help="the trainers, their networks and whether nnU-Net can see them")
    listing.set_defaults(func=_cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    from nnunet_ext.catalog import UnknownTrainerError

    args = build_parser().parse_args(argv)
    try:  # our errors name the problem and the fix: print them without a traceback
        args.func(args)
    except (UnknownTrainerError, FileExistsError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"nnunet-ext {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
