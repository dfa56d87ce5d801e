"""Per-case evaluation of a model's validation predictions: Dice, HD95 and NSD per label or region.

Metrics, per label or region (nnU-Net's label manager decides which: ``dataset.json`` regions when it declares
them), per validation case:

* Dice: nnU-Net's own, from ``summary.json``.
* HD95 (mm): the 95th percentile of the surface distances, the larger of the two directed values (prediction to
  reference and back).
* NSD (normalised surface distance, surface Dice; Nikolov et al., 2021): the share of the surface of both masks
  within ``tolerance`` mm of the other mask's surface (default 2 mm, ``--nsd-tolerance``).

Surfaces (``nnunet_ext.surface_metrics``, ``--surface-definition``): by default the surface elements on the voxel
faces, each weighted by its area, as Nikolov et al. and DeepMind's ``surface-distance`` define them (the figures
published with NSD); ``voxel``: the boundary voxels, each weighted 1 (MONAI's default). A label absent from both
reference and prediction gives no value (nnU-Net's Dice is NaN then too); present in only one, HD95 is the image
diagonal (the worst possible) and NSD is 0. Voxels of nnU-Net's ignore label belong to neither surface. Cases are
measured in ``-np`` processes, as nnU-Net's evaluation does.
"""
from __future__ import annotations

import math
import multiprocessing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_ext.benchmarking.results import BenchmarkError, Model, read_json
from nnunet_ext.surface_metrics import DEFAULT_SURFACE_DEFINITION, surface_metrics

DEFAULT_NSD_TOLERANCE_MM = 2.0
MEAN_KEY = "mean"  # the per-case mean over the foreground labels/regions


@dataclass(frozen=True)
class CaseMetrics:
    trainer: str
    configuration: str
    fold: str
    case: str
    label: str  # nnU-Net's key of the label or region ("1", "(1, 2)"), or MEAN_KEY
    dice: float
    hd95: float
    nsd: float


def label_names(dataset_json: dict) -> dict[str, str]:
    """nnU-Net's summary key of each foreground label or region -> its name in dataset.json."""
    # the keys nnU-Net's evaluation writes: str(label) for labels, str(tuple(region)) for regions
    return {str(tuple(value)) if isinstance(value, (list, tuple)) else str(int(value)): name
            for name, value in dataset_json["labels"].items() if name not in ("background", "ignore")}


@dataclass(frozen=True)
class CaseTask:
    """What one worker needs to measure one validation case."""

    reference_file: str
    prediction_file: str
    reader_class: type
    keys: tuple[str, ...]  # nnU-Net's label or region keys
    ignore_label: int | None
    tolerance_mm: float
    definition: str


def case_surface_metrics(task: CaseTask) -> list[tuple[float, float]]:
    """(HD95, NSD) of each label or region of one case."""
    from nnunetv2.evaluation.evaluate_predictions import key_to_label_or_region, region_or_label_to_mask

    reader = task.reader_class()
    reference, properties = reader.read_seg(task.reference_file)
    prediction, _ = reader.read_seg(task.prediction_file)
    reference, prediction = reference[0], prediction[0]
    ignore = reference == task.ignore_label if task.ignore_label is not None else None
    return [surface_metrics(region_or_label_to_mask(reference, region), region_or_label_to_mask(prediction, region),
                            properties["spacing"], task.tolerance_mm, ignore, task.definition)
            for region in map(key_to_label_or_region, task.keys)]


def measure_cases(tasks: list[CaseTask], processes: int, description: str) -> list[list[tuple[float, float]]]:
    """``case_surface_metrics`` of every task, in ``processes`` worker processes (spawned, as nnU-Net's evaluation
    does), with a progress bar."""
    from tqdm import tqdm

    progress = {"total": len(tasks), "desc": description, "unit": "case"}
    if processes <= 1 or len(tasks) <= 1:
        return [case_surface_metrics(task) for task in tqdm(tasks, **progress)]
    with multiprocessing.get_context("spawn").Pool(min(processes, len(tasks))) as pool:
        return list(tqdm(pool.imap(case_surface_metrics, tasks), **progress))


def evaluate_model(model: Model, gt_folder: Path, tolerance_mm: float,
                   definition: str = DEFAULT_SURFACE_DEFINITION, processes: int = 1) -> list[CaseMetrics]:
    """Per case and label/region: nnU-Net's Dice from summary.json, HD95 and NSD from the saved predictions."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(str(model.folder / "plans.json"))
    dataset_json = read_json(model.folder / "dataset.json")
    ending = dataset_json["file_ending"]
    reader = plans_manager.image_reader_writer_class()
    ignore_label = plans_manager.get_label_manager(dataset_json).ignore_label
    cases, tasks = [], []
    for fold in model.folds:
        validation = model.folder / f"fold_{fold}" / "validation"
        summary = read_json(validation / "summary.json")
        for entry in summary["metric_per_case"]:
            case = Path(entry["prediction_file"]).name.removesuffix(ending)
            reference_file, prediction_file = gt_folder / f"{case}{ending}", validation / f"{case}{ending}"
            if not reference_file.is_file():
                raise BenchmarkError(f"Validation case {case} of {model.folder.name} fold {fold} has no ground truth "
                                     f"in {gt_folder}: these results come from another dataset (or its "
                                     f"preprocessing was redone with other cases).")
            if not prediction_file.is_file():
                raise BenchmarkError(f"{prediction_file} is missing although summary.json lists it; rerun the "
                                     f"validation: nnUNetv2_train ... {fold} -tr {model.trainer} --val --npz")
            cases.append((fold, case, entry["metrics"]))
            tasks.append(CaseTask(str(reference_file), str(prediction_file), type(reader), tuple(entry["metrics"]),
                                  ignore_label, tolerance_mm, definition))
    rows = []
    for (fold, case, metrics), surface in zip(cases, measure_cases(tasks, processes, model.name)):
        case_rows = [CaseMetrics(model.trainer, model.configuration, fold, case, key, _number(values["Dice"]), hd95,
                                 nsd) for (key, values), (hd95, nsd) in zip(metrics.items(), surface)]
        rows += case_rows
        rows.append(CaseMetrics(model.trainer, model.configuration, fold, case, MEAN_KEY,
                                nanmean([r.dice for r in case_rows]), nanmean([r.hd95 for r in case_rows]),
                                nanmean([r.nsd for r in case_rows])))
    return rows


def _number(value) -> float:
    return math.nan if value is None else float(value)


def nanmean(values: list[float]) -> float:
    """The mean of the values that are not NaN; NaN when none is (without numpy's warning)."""
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def nanstd(values: list[float]) -> float:
    """The sample standard deviation (ddof 1) of the values that are not NaN; NaN with fewer than two."""
    finite = [v for v in values if not math.isnan(v)]
    return float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan
