"""Preflight checks behind ``nnunet-ext check``: each failure names the problem and the fix, before nnU-Net
would fail later with a less helpful traceback (a stock ``nnUNetv2_predict`` given an extra image channel, for
example, stops deep in preprocessing with an IndexError)."""
from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from pathlib import Path

NNUNET_PATH_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


class CheckError(ValueError):
    """A failed preflight check; the message says what to do."""


def require_nnunet_paths(environ: os._Environ | dict[str, str] | None = None) -> dict[str, Path]:
    """The three nnU-Net folders from the environment, or CheckError naming the missing variables."""
    environ = os.environ if environ is None else environ
    missing = [v for v in NNUNET_PATH_VARIABLES if not environ.get(v)]
    if missing:
        raise CheckError(f"nnU-Net environment variable(s) not set: {', '.join(missing)}. Set them, e.g. "
                         + " ".join(f"export {v}=/data/{v}" for v in missing)
                         + " (nnU-Net's documentation/setting_up_paths.md explains them).")
    return {v: Path(environ[v]) for v in NNUNET_PATH_VARIABLES}


def _dataset_folders(root: Path) -> dict[int, Path]:
    found = {}
    if root.is_dir():
        for folder in root.iterdir():
            if match := re.fullmatch(r"Dataset(\d{3})_.+", folder.name):
                found.setdefault(int(match.group(1)), folder)
    return found


def find_dataset(dataset: str, paths: dict[str, Path]) -> str:
    """The dataset's folder name (DatasetXXX_Name) from an id or a name, looked up in raw and preprocessed."""
    known = {**_dataset_folders(paths["nnUNet_raw"]), **_dataset_folders(paths["nnUNet_preprocessed"])}
    wanted = int(dataset) if dataset.isdigit() else next(
        (i for i, f in known.items() if f.name == dataset), None)
    if wanted not in known:
        existing = ", ".join(f.name for _, f in sorted(known.items())) or "none"
        raise CheckError(f"Dataset '{dataset}' not found in nnUNet_raw ({paths['nnUNet_raw']}) or nnUNet_preprocessed "
                         f"({paths['nnUNet_preprocessed']}). Existing datasets: {existing}. Create it (nnU-Net's "
                         f"dataset conversion, or `nnunet-ext synth ID` for synthetic data) or fix the id.")
    return known[wanted].name


def load_plans(dataset_name: str, plans_name: str, configuration: str, paths: dict[str, Path]) -> dict:
    plans_file = paths["nnUNet_preprocessed"] / dataset_name / f"{plans_name}.json"
    if not plans_file.is_file():
        raise CheckError(f"No plans {plans_file}. Run: nnUNetv2_plan_and_preprocess -d {dataset_name[7:10]} "
                         f"-c {configuration}")
    return json.loads(plans_file.read_text())


def check_trainer_configuration(trainer: type, plans: dict, configuration: str) -> None:
    """The trainer's own dimension check (nnunet-ext trainers); nnU-Net's trainers handle every configuration."""
    if hasattr(trainer, "check_configuration"):
        trainer.check_configuration(plans, configuration)
    elif configuration not in plans["configurations"]:
        raise CheckError(f"Configuration '{configuration}' is not in the plans; available: "
                         f"{', '.join(plans['configurations'])}.")


def check_input_channels(input_folder: Path, dataset_json: dict) -> int:
    """Every case in ``input_folder`` has exactly the channel files the model was trained with; returns the number
    of cases."""
    if not input_folder.is_dir():
        raise CheckError(f"Input folder {input_folder} does not exist.")
    ending = dataset_json["file_ending"]
    channels_by_case: dict[str, set[str]] = defaultdict(set)
    for file in input_folder.iterdir():
        if match := re.fullmatch(rf"(.+)_(\d{{4}}){re.escape(ending)}", file.name):
            channels_by_case[match.group(1)].add(match.group(2))
    if not channels_by_case:
        raise CheckError(f"No images named CASE_XXXX{ending} in {input_folder} (nnU-Net's naming: one file per "
                         f"channel, _0000 for the first).")
    names = dataset_json["channel_names"]
    expected = {f"{int(i):04d}" for i in names}
    for case, channels in sorted(channels_by_case.items()):
        if channels != expected:
            raise CheckError(
                f"Case '{case}' has channel file(s) {', '.join(sorted(channels))} but the model was trained with "
                f"{len(expected)} channel(s) ({', '.join(f'_{int(i):04d} = {n}' for i, n in names.items())}). "
                f"Give each case exactly those files.")
    return len(channels_by_case)
