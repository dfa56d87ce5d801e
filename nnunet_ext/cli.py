"""The ``nnunet-ext`` command: synthetic data, the demo, and what the package offers.

Training and prediction use nnU-Net's own commands (``nnUNetv2_train ... -tr nnUNetTrainerSegFormer3DVariant``);
this command only adds what nnU-Net has no command for.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import textwrap
from dataclasses import dataclass
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


def _cmd_demo(args: argparse.Namespace) -> None:
    from nnunet_ext.demo import run_demo

    run_demo(workdir=args.workdir, quick=args.quick, trainer_names=args.trainers, baseline=args.baseline,
             dataset_id=args.dataset_id, overwrite=args.overwrite)


class _CheckReport:
    """The lines of ``nnunet-ext check``: printed as they come ('ok', '!!' a problem, '--' not checkable), or
    collected and printed as one JSON object at the end."""

    MARKS = {"ok": "ok", "problem": "!!", "unchecked": "--"}

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.checks: list[dict] = []

    def add(self, status: str, check: str, message: str, **data) -> None:
        self.checks.append({"check": check, "status": status, "message": message, **data})
        if not self.as_json:
            print(f"{self.MARKS[status]}  {message}")

    def finish(self) -> None:
        if self.as_json:
            print(json.dumps({"ok": all(c["status"] != "problem" for c in self.checks), "checks": self.checks},
                             indent=1))


def _cmd_check(args: argparse.Namespace) -> None:
    from nnunet_ext import checks
    from nnunet_ext.catalog import resolve_trainer

    report = _CheckReport(args.json)
    paths = checks.require_nnunet_paths()
    report.add("ok", "folders", "nnU-Net folders: " + ", ".join(f"{k}={v}" for k, v in paths.items()),
               **{k: str(v) for k, v in paths.items()})
    dataset_name = checks.find_dataset(args.dataset, paths)
    report.add("ok", "dataset", f"dataset {dataset_name}", dataset=dataset_name)
    plans = checks.load_plans(dataset_name, args.plans, args.configuration, paths)
    trainer = resolve_trainer(args.trainer)
    checks.check_trainer_configuration(trainer, plans, args.configuration)
    report.add("ok", "configuration", f"{trainer.__name__} can train and predict configuration "
               f"'{args.configuration}' of {args.plans}", trainer=trainer.__name__, configuration=args.configuration,
               plans=args.plans)
    _check_memory(args, trainer, plans, paths["nnUNet_preprocessed"] / dataset_name / "dataset.json", report)
    if args.input is not None:
        dataset_json = json.loads((paths["nnUNet_preprocessed"] / dataset_name / "dataset.json").read_text())
        cases = checks.check_input_channels(Path(args.input), dataset_json)
        channels = len(dataset_json["channel_names"])
        report.add("ok", "input", f"{cases} case(s) in {args.input} with the model's {channels} channel(s)",
                   cases=cases, channels=channels)
    if not discovery.is_active():
        report.add("problem", "discovery", "trainer discovery is inactive in this environment; activate it with:\n"
                   "    " + discovery.export_line())
    report.finish()


def _check_memory(args: argparse.Namespace, trainer: type, plans: dict, dataset_json: Path,
                  report: _CheckReport) -> None:
    import torch

    from nnunet_ext import planning

    if not callable(getattr(trainer, "training_memory", None)):
        report.add("unchecked", "memory", f"no predicted memory: {trainer.__name__} has no memory model (not built "
                   f"on nnUNetTrainerExt)")
        return
    memory, precision, patch, batch = planning.predicted_training_memory(
        trainer, plans, args.configuration, json.loads(dataset_json.read_text()))
    report.add("ok", "memory", f"predicted training memory {memory.peak_gb:.2f} GB ({precision}, patch {patch}, "
               f"batch {batch})", predicted_memory_gb=round(memory.peak_gb, 3), precision=precision,
               patch_size=list(patch), batch_size=batch)
    limits = [(args.gpu_memory_target, f"-gpu_memory_target {args.gpu_memory_target:g} GB")] \
        if args.gpu_memory_target is not None else []
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_properties(torch.cuda.current_device())
        limits.append((gpu.total_memory / 1e9, f"the memory of the visible GPU ({gpu.name}, "
                                               f"{gpu.total_memory / 1e9:.1f} GB)"))
    for limit, name in limits:
        if memory.peak_gb > limit:
            report.add("problem", "memory_limit",
                       f"the predicted {memory.peak_gb:.2f} GB exceed {name}: plan for it with nnunet-ext plan -d "
                       f"{args.dataset} -tr {trainer.__name__} -gpu_memory_target {math.floor(limit * 10) / 10:g}",
                       limit_gb=limit)


EXIT_STATUS = {0: "done", 1: "a fold or case failed", 2: "usage or input error (the message says what to fix)",
               75: "stopped by a signal; run the same command again to resume", 143: "stopped by SIGTERM; run the same "
               "command again to add the cases not done (finished ones are kept)"}


@dataclass(frozen=True)
class Subcommand:
    """What ``nnunet-ext NAME --help`` opens with: a one-line summary (also in ``nnunet-ext --help``), what the
    command does and writes, and its exit statuses."""

    summary: str
    description: str
    exit_statuses: tuple[int, ...] = (0, 2)

    def help_text(self) -> str:
        statuses = "\n".join(f"  {code:>3}  {EXIT_STATUS[code]}" for code in self.exit_statuses)
        return f"{self.summary}.\n\n{textwrap.fill(self.description, 100)}\n\nexit status:\n{statuses}"


SUBCOMMANDS = {
    "synth": Subcommand(
        "Write a synthetic nnU-Net raw dataset (organs with tumours) to $nnUNet_raw",
        "Organ-like blobs with tumour-like inclusions, 2D or 3D, one channel (CT-like) or several (MRI-like), labels "
        "or regions, in nnU-Net v2's raw format: $nnUNet_raw/DatasetXXX_Synth*/ with imagesTr, labelsTr, imagesTs, "
        "labelsTs and dataset.json. Prints the planning command to run next."),
    "demo": Subcommand(
        "Synthetic data -> plan -> train -> predict -> Dice table, on CPU",
        "Every step is a stock nnU-Net command: a synthetic 3D dataset, nnUNetv2_plan_and_preprocess, nnUNetv2_train "
        "of each trainer's _Demo variant (the same step budget for all), nnUNetv2_predict on the held-out cases and "
        "nnU-Net's evaluation. Writes WORKDIR/demo_results.md and demo_results.json (Dice per label, training time, "
        "parameters per trainer) and demo_log.txt; reuses what it trained before. Duration on 2 CPU cores, as the "
        "README measures: about 4 minutes per trainer (the SegFormer3D variant alone: 242 s), 9 more with "
        "--baseline; --quick about a minute per trainer."),
    "check": Subcommand(
        "Preflight: nnU-Net folders, dataset, plans, trainer vs configuration, memory, input channels",
        "Checks what a long nnUNetv2_train or nnUNetv2_predict needs, before it starts: the nnU-Net environment "
        "variables, the dataset and its plans, that the trainer can train and predict the configuration, the "
        "trainer's predicted training memory at the plan (against -gpu_memory_target and the visible GPU), and with "
        "-i that every case of an input folder has the model's channels and nnU-Net's file naming. One line per "
        "check ('ok', '!!' a problem to fix, '--' not checkable), or one JSON object with --json."),
    "plan": Subcommand(
        "nnU-Net's planning with the trainer's own training memory",
        "Runs nnU-Net's ExperimentPlanner for DATASET with the trainer's predicted training-step memory in place of "
        "PlainConvUNet's heuristic, so that patch and batch size fill -gpu_memory_target for this network. Writes "
        "nnUNet_preprocessed/<Dataset>/<plans name>.json (reusing nnUNetPlans' preprocessed data; existing plans only "
        "with --overwrite), and prints the planned patch, batch and predicted memory per configuration and the "
        "nnUNetv2_train command that uses them."),
    "cv": Subcommand(
        "Run the cross-validation folds of several trainers with nnUNetv2_train",
        "Each (trainer, fold) runs through nnU-Net's own nnUNetv2_train --npz, so that ensembling works later: "
        "finished folds are skipped, interrupted ones resumed with --c, trained but unvalidated ones validated with "
        "--val; one fold per GPU with --gpus. --dry-run prints the plan; --emit-slurm writes a SLURM array script "
        "instead. Outputs: nnU-Net's results folders, and the state of every fold on the console.",
        (0, 1, 2, 75)),
    "benchmark": Subcommand(
        "Compare trainers' cross-validation results",
        "Per label or region: Dice (nnU-Net's summary.json), HD95 and normalised surface distance from the saved "
        "validation predictions; cost (parameters, FLOPs, time per epoch and case); each trainer against --reference "
        "(Wilcoxon and Holm-adjusted p, bootstrap confidence interval of the Dice difference). Writes "
        "OUT/benchmark.md, benchmark.csv, benchmark_cases.csv and benchmark.png (--ensemble: adds nnU-Net's "
        "find_best_configuration)."),
    "detect": Subcommand(
        "RCC detection: DICOM or images -> kidney and tumour segmentation, per-side verdict",
        "Segments each case (a DICOM series folder, a folder of such folders, or nnU-Net images) with a trained "
        "nnU-Net model (a kidney model first, if given, then the tumour model on the kidney's crop), decides per "
        "side, and writes OUT/<case>/report.json, the segmentation, key-slice PNGs with bounding boxes, and "
        "OUT/summary.csv. Every case is checked before the first prediction; a rerun adds the cases not done.",
        (0, 1, 2, 143)),
    "dicom2nifti": Subcommand(
        "Convert DICOM series (one folder per case) to NIfTI",
        "Reads each series with SimpleITK in slice order (duplicates, gaps, several series and unreadable files "
        "reported) and writes OUT/<case>.nii.gz, or <case>_0000.nii.gz with --nnunet-names, ready as nnU-Net input. "
        "A file is written under its final name only once complete.", (0, 2, 143)),
    "list": Subcommand(
        "The trainers, their networks, and whether nnU-Net can see them",
        "nnunet-ext's trainers, those of plug-in packages and those of the nnUNet_extTrainer folders: source, "
        "network, dimensionality, configurations, parameters and short variants; --json for a machine-readable list."),
}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; every option's help ends with its default, where it has a meaningful one and the
    help does not already say it in words."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in help_text.lower() and \
                action.option_strings:
            default = " ".join(action.default) if isinstance(action.default, (list, tuple)) else "%(default)s"
            help_text += f" (default: {default})"
        return help_text


def _add_subcommand(sub, name: str) -> argparse.ArgumentParser:
    command = SUBCOMMANDS[name]
    return sub.add_parser(name, help=command.summary, description=command.help_text(), formatter_class=_HelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunet-ext", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = _add_subcommand(sub, "synth")
    synth.add_argument("dataset_id", type=int, help="dataset id, 1..999")
    synth.add_argument("--dim", type=int, choices=(2, 3), default=3, help="spatial dimensions of the images")
    synth.add_argument("--cases", type=int, default=10, help="training cases (>= 5 for 5-fold cross-validation)")
    synth.add_argument("--test-cases", type=int, default=2, help="held-out cases in imagesTs/labelsTs")
    synth.add_argument("--channels", type=int, default=1, help="1 = CT-like, more = MRI-like sequences")
    synth.add_argument("--regions", action="store_true", help="region labels (organ incl. tumour, tumour)")
    synth.add_argument("--shape", type=int, nargs="+", default=None,
                       help="image size, z y x for 3D or y x for 2D, >= 16 per axis (default 32 64 64 / 96 96)")
    synth.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same dataset")
    synth.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this id")
    synth.set_defaults(func=_cmd_synth)

    demo = _add_subcommand(sub, "demo")
    demo.add_argument("--workdir", default="nnunet_ext_demo",
                      help="working folder; holds nnUNet_raw/preprocessed/results unless those are set already")
    demo.add_argument("--quick", action="store_true", help="a smoke run of about a minute: 2 iterations per trainer")
    demo.add_argument("--trainers", nargs="+", default=None,
                      help="full-length trainer names to train (default: all of nnunet-ext's 3D trainers)")
    demo.add_argument("--baseline", action="store_true",
                      help="also train nnU-Net's default trainer with the same step budget (about 9 more minutes "
                           "on 2 CPU cores: its network costs 3x more per step there)")
    demo.add_argument("--dataset-id", type=int, default=501, help="nnU-Net dataset id of the demo's data")
    demo.add_argument("--overwrite", action="store_true", help="retrain and re-predict instead of reusing results")
    demo.set_defaults(func=_cmd_demo)

    check = _add_subcommand(sub, "check")
    check.add_argument("-d", dest="dataset", required=True, help="dataset id or name")
    check.add_argument("-c", dest="configuration", required=True, help="configuration, e.g. 3d_fullres")
    check.add_argument("-tr", dest="trainer", required=True, help="trainer name, as nnUNetv2_train takes it")
    check.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier")
    check.add_argument("--json", action="store_true", help="print the results as one JSON object")
    check.add_argument("-i", dest="input", default=None, help="an input folder for nnUNetv2_predict")
    check.add_argument("-gpu_memory_target", type=float, default=None,
                       help="GB: say when the trainer's predicted training memory exceeds it (and the visible GPU's)")
    check.set_defaults(func=_cmd_check)

    from nnunet_ext import benchmarking, crossval, planning_cli

    planning_cli.configure_parser(_add_subcommand(sub, "plan"))

    crossval.configure_parser(_add_subcommand(sub, "cv"))
    benchmarking.configure_parser(_add_subcommand(sub, "benchmark"))

    from nnunet_ext import detection_cli

    detect = _add_subcommand(sub, "detect")
    detection_cli.add_detect_arguments(detect)
    detect.set_defaults(func=detection_cli.run_detect)
    dicom2nifti = _add_subcommand(sub, "dicom2nifti")
    detection_cli.add_dicom2nifti_arguments(dicom2nifti)
    dicom2nifti.set_defaults(func=detection_cli.run_dicom2nifti)

    listing = _add_subcommand(sub, "list")
    listing.add_argument("--json", action="store_true", help="print the trainers as a JSON list")
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
