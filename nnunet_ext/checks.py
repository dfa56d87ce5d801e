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
# file endings that nnU-Net reads with SimpleITK (SimpleITKIO, SimpleITKIOWithReorient)
SIMPLEITK_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".gipl")


class CheckError(ValueError):
    """A failed preflight check; the message says what to do."""


def require_nnunet_paths(environ: os._Environ | dict[str, str] | None = None) -> dict[str, Path]:
    """The three nnU-Net folders from the environment, or CheckError naming the missing variables or those that
    point at a file."""
    environ = os.environ if environ is None else environ
    missing = [v for v in NNUNET_PATH_VARIABLES if not environ.get(v)]
    if missing:
        raise CheckError(f"nnU-Net environment variable(s) not set: {', '.join(missing)}. Set them, e.g. "
                         + " ".join(f"export {v}=/data/{v}" for v in missing)
                         + " (nnU-Net's documentation/setting_up_paths.md explains them).")
    paths = {v: Path(environ[v]) for v in NNUNET_PATH_VARIABLES}
    files = [f"{v}={p}" for v, p in paths.items() if p.exists() and not p.is_dir()]
    if files:
        raise CheckError(f"nnU-Net environment variable(s) pointing at a file, not a folder: {', '.join(files)}. "
                         "Point each at a folder (nnU-Net creates missing ones).")
    return paths


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
    """Every case in ``input_folder`` has exactly the channel files the model was trained with, every file that
    nnU-Net's listing picks up (those ending in the dataset's file ending) follows its naming, and no image is 4D or
    has several components per voxel; returns the number of cases."""
    if not input_folder.is_dir():
        raise CheckError(f"Input folder {input_folder} does not exist.")
    ending = dataset_json["file_ending"]
    channels_by_case: dict[str, set[str]] = defaultdict(set)
    misnamed = []
    for file in sorted(input_folder.iterdir()):
        if not file.is_file() or not file.name.endswith(ending):
            continue
        match = re.fullmatch(rf"(.+)_(\d{{4}}){re.escape(ending)}", file.name)
        if match is None or file.name.startswith("."):
            misnamed.append(file.name)
        else:
            channels_by_case[match.group(1)].add(match.group(2))
    if misnamed:
        raise CheckError(f"{len(misnamed)} file(s) in {input_folder} end in {ending} but do not follow nnU-Net's "
                         f"naming CASE_XXXX{ending}: {', '.join(misnamed[:5])}{' ...' if len(misnamed) > 5 else ''}. "
                         "nnUNetv2_predict would read them and fail (hidden files and left-over partial files "
                         "included). Rename or remove them.")
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
    if ending in SIMPLEITK_ENDINGS:
        for case, channels in sorted(channels_by_case.items()):
            for channel in sorted(channels):
                check_image_layout(input_folder / f"{case}_{channel}{ending}")
    return len(channels_by_case)


def check_image_layout(file: Path) -> None:
    """One image per channel file: refuse a 4D image or one with several components per voxel (a vector or RGB
    image), which nnU-Net's SimpleITK reader would misread as other axes. Reads the header only."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(file))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise CheckError(f"{file} cannot be read as an image ({str(error).strip().splitlines()[-1]}).") from error
    if reader.GetDimension() > 3:
        raise CheckError(f"{file.name} is a {reader.GetDimension()}D image (size {reader.GetSize()}); nnU-Net reads "
                         "one 2D or 3D image per channel file. Split it into CASE_0000, CASE_0001, ... files.")
    if reader.GetNumberOfComponents() > 1:
        raise CheckError(f"{file.name} has {reader.GetNumberOfComponents()} components per voxel (a vector "
                         "or RGB image); nnU-Net reads one value per voxel per channel file. Store each component "
                         "as its own channel file (CASE_0000, CASE_0001, ...).")
