"""The results a benchmark compares, found and checked: one ``Model`` per trainer x plans x configuration.

Everything is read from what nnU-Net leaves on disk, so the outputs can be regenerated at any time:
``nnUNet_results/<Dataset>/<Trainer>__<plans>__<configuration>/fold_X/validation`` (``summary.json`` and the
predicted label maps), the training logs next to it, and the ground truth in
``nnUNet_preprocessed/<Dataset>/gt_segmentations``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

ALL_FOLDS = ("0", "1", "2", "3", "4")


class BenchmarkError(ValueError):
    """Results that cannot be compared as asked; the message says what exists and what to do."""


def read_json(path: Path) -> dict:
    """A JSON file of nnU-Net's results; a damaged one is a BenchmarkError that names it."""
    try:
        return json.loads(path.read_text())
    except ValueError as error:  # JSONDecodeError, or bytes that are not text
        raise BenchmarkError(f"{path} is not valid JSON ({error}): a damaged or partly written file. Recreate it "
                             "(nnUNetv2_train --val rewrites a fold's validation/summary.json; nnunet-ext cv does "
                             "that for a damaged one), or move the folder away.") from error


@dataclass
class Model:
    """One trainer x plans x configuration results folder and what it holds."""

    trainer: str
    plans: str
    configuration: str
    folder: Path
    folds: list[str]
    missing_folds: list[str]

    @property
    def name(self) -> str:
        return f"{self.trainer} {self.configuration}"


def _fold_names(folder: Path) -> list[str]:
    names = [p.name.removeprefix("fold_") for p in folder.glob("fold_*")
             if (p / "validation" / "summary.json").is_file()]
    return sorted(names, key=lambda n: (not n.isdigit(), int(n) if n.isdigit() else 0, n))


def _existing_results(dataset_folder: Path) -> str:
    found = []
    for folder in sorted(dataset_folder.glob("*__*__*")):
        folds = _fold_names(folder)
        found.append(f"{folder.name} (folds with validation: {', '.join(folds) or 'none'})")
    return "; ".join(found) or "none"


def find_models(results_root: Path, dataset_name: str, trainers: list[str], configurations: list[str],
                plans: str | None, folds: list[str] | None = None) -> list[Model]:
    """The results folder of every trainer x configuration, checked: it exists, holds validated folds, belongs to
    this dataset, and every model uses the same plans."""
    dataset_folder = results_root / dataset_name
    if not dataset_folder.is_dir():
        others = ", ".join(sorted(p.name for p in results_root.glob("Dataset*"))) or "none"
        raise BenchmarkError(f"No results for {dataset_name} in nnUNet_results ({results_root}); datasets with "
                             f"results: {others}. Train first, e.g. nnunet-ext cv -d {dataset_name[7:10]} ...")
    models = []
    for configuration in dict.fromkeys(configurations):
        for trainer in dict.fromkeys(trainers):
            pattern = f"{trainer}__{plans}__{configuration}" if plans else f"{trainer}__*__{configuration}"
            candidates = [p for p in sorted(dataset_folder.glob(pattern)) if p.is_dir() and _fold_names(p)]
            if not candidates:
                raise BenchmarkError(
                    f"No cross-validation results of {trainer} {configuration}"
                    f"{f' with plans {plans}' if plans else ''} in {dataset_folder} (a fold counts once "
                    f"fold_X/validation/summary.json exists). What exists: {_existing_results(dataset_folder)}. "
                    f"Train it with nnunet-ext cv, or fix -tr/-c/-p.")
            if len(candidates) > 1:
                raise BenchmarkError(
                    f"Mixed plans identifiers: {trainer} {configuration} has results with several plans "
                    f"({', '.join(p.name.split('__')[1] for p in candidates)}). Choose one with -p.")
            folder = candidates[0]
            found = _fold_names(folder)
            wanted = folds if folds else [f for f in ALL_FOLDS]
            usable = [f for f in found if f in wanted]
            if not usable:
                raise BenchmarkError(f"{folder.name} has validated folds {', '.join(found)} but none of the requested "
                                     f"folds {', '.join(wanted)}.")
            models.append(Model(trainer, folder.name.split("__")[1], configuration, folder, usable,
                                [f for f in wanted if f not in found]))
    used_plans = {m.plans for m in models}
    if len(used_plans) > 1:
        detail = ", ".join(f"{m.trainer} {m.configuration}: {m.plans}" for m in models)
        raise BenchmarkError(f"Mixed plans identifiers ({detail}): models trained with different plans differ in "
                             f"more than the trainer. Pass -p to compare the models of one plans identifier.")
    for model in models:
        _check_belongs_to_dataset(model, dataset_name)
    return models


def _check_belongs_to_dataset(model: Model, dataset_name: str) -> None:
    plans_file = model.folder / "plans.json"
    if not plans_file.is_file():
        raise BenchmarkError(f"{plans_file} is missing: not an nnU-Net results folder (nnUNetv2_train writes it).")
    plans = read_json(plans_file)
    if plans.get("dataset_name") != dataset_name or plans.get("plans_name") != model.plans:
        raise BenchmarkError(
            f"{model.folder} holds results of dataset {plans.get('dataset_name')} with plans {plans.get('plans_name')} "
            f"(its plans.json), not of {dataset_name} with plans {model.plans}: a results folder copied from another "
            f"dataset? Move it back to nnUNet_results/{plans.get('dataset_name')}.")
