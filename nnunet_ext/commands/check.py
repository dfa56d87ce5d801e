"""Preflight: nnU-Net folders, dataset, plans, trainer vs configuration, memory, input channels.

Checks what a long nnUNetv2_train or nnUNetv2_predict needs, before it starts: the nnU-Net environment variables,
the dataset and its plans, that the trainer can train and predict the configuration, the trainer's predicted
training memory at the plan (against -gpu_memory_target and the visible GPU), and with -i that every case of an
input folder has the model's channels and nnU-Net's file naming. One line per check ('ok', '!!' a problem to fix,
'--' not checkable), or one JSON object with --json.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from nnunet_ext import discovery


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", dest="dataset", required=True, help="dataset id or name")
    parser.add_argument("-c", dest="configuration", required=True, help="configuration, e.g. 3d_fullres")
    parser.add_argument("-tr", dest="trainer", required=True, help="trainer name, as nnUNetv2_train takes it")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("-i", dest="input", default=None, help="an input folder for nnUNetv2_predict")
    parser.add_argument("-gpu_memory_target", type=float, default=None,
                        help="GB: say when the trainer's predicted training memory exceeds it (and the visible GPU's)")


class CheckReport:
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


def command(args: argparse.Namespace) -> None:
    from nnunet_ext import checks, datasets
    from nnunet_ext.catalog import resolve_trainer

    report = CheckReport(args.json)
    paths = checks.require_nnunet_paths()
    report.add("ok", "folders", "nnU-Net folders: " + ", ".join(f"{k}={v}" for k, v in paths.items()),
               **{k: str(v) for k, v in paths.items()})
    dataset_name = datasets.dataset_name(args.dataset)
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
                  report: CheckReport) -> None:
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
