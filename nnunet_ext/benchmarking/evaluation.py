"""``nnunet-ext benchmark``: compare trainers from their nnU-Net cross-validation results.

Everything is read from what nnU-Net leaves on disk, so the outputs can be regenerated at any time:
``nnUNet_results/<Dataset>/<Trainer>__<plans>__<configuration>/fold_X/validation`` (``summary.json`` and the
predicted label maps), the training logs next to it, and the ground truth in
``nnUNet_preprocessed/<Dataset>/gt_segmentations``.

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

Cost: parameters and FLOPs (2 x multiply-accumulates, ``architectures.profiling``) of the network that
``nnUNetv2_predict`` builds (``build_network_architecture`` with the results folder's plans, no deep supervision),
for one patch of the plan; seconds per epoch from ``Epoch time`` in the training logs; seconds per validation
case from the log's time stamps (sliding-window prediction and export); peak memory when a log reports it.

Statistics: mean ± standard deviation over all validation cases of all folds found; each trainer against a
reference trainer (default nnU-Net's ``nnUNetTrainer``) on the per-case mean foreground Dice of the cases both
have: Wilcoxon signed-rank test (scipy, two-sided, zero differences dropped) and the matched-pairs rank-biserial
correlation (Kerby, 2014; +1: the trainer is better on every case, -1: worse); with several trainers, the
p-values also Holm-adjusted over all of them (Holm, 1979); a 95 % confidence interval of the mean difference from
a percentile bootstrap of the paired cases (10,000 resamples, seeded: the same figures every run).
"""
from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import re
import subprocess
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import numpy as np

from nnunet_ext import checks
from nnunet_ext.surface_metrics import DEFAULT_SURFACE_DEFINITION, SURFACE_DEFINITIONS, surface_metrics

DEFAULT_REFERENCE = "nnUNetTrainer"
DEFAULT_NSD_TOLERANCE_MM = 2.0
ALL_FOLDS = ("0", "1", "2", "3", "4")
MEAN_KEY = "mean"  # the per-case mean over the foreground labels/regions
OUTPUT_FILES = ("benchmark.md", "benchmark.csv", "benchmark_cases.csv", "benchmark.png")


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


# ---- finding the results -----------------------------------------------------------------------------------------

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


# ---- per-case metrics --------------------------------------------------------------------------------------------

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
                                _nanmean([r.dice for r in case_rows]), _nanmean([r.hd95 for r in case_rows]),
                                _nanmean([r.nsd for r in case_rows])))
    return rows


def _number(value) -> float:
    return math.nan if value is None else float(value)


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _nanstd(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan


# ---- cost --------------------------------------------------------------------------------------------------------

@dataclass
class Cost:
    parameters: int | None = None
    flops: float | None = None  # per forward pass of one patch
    patch_size: list[int] = field(default_factory=list)
    epoch_seconds: float | None = None
    epochs_logged: int = 0
    seconds_per_case: float | None = None
    peak_memory_mib: float | None = None


TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?): (.*)$")
EPOCH_TIME = re.compile(r"Epoch time: ([\d.]+) s")
PEAK_MEMORY = re.compile(r"peak[ _](?:gpu |cuda |)memory[^0-9]*([\d.]+)\s*(MiB|MB|GiB|GB)", re.IGNORECASE)


def network_size(model: Model, trainer_class: type) -> tuple[int, float, list[int]]:
    """(parameters, FLOPs per patch, patch size) of the network nnU-Net builds to predict with this model."""
    import torch

    from nnunet_ext.architectures.profiling import count_macs, count_parameters
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(str(model.folder / "plans.json"))
    configuration = plans_manager.get_configuration(model.configuration)
    dataset_json = read_json(model.folder / "dataset.json")
    channels = determine_num_input_channels(plans_manager, configuration, dataset_json)
    outputs = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    patch = [int(p) for p in configuration.patch_size]

    def build():
        return trainer_class.build_network_architecture(plans_manager, configuration, channels, outputs,
                                                        enable_deep_supervision=False)

    try:  # the meta device counts a full-size 3D patch without allocating it
        with torch.device("meta"):
            network = build()
        macs = count_macs(network, (1, channels, *patch), device="meta")
    except (NotImplementedError, RuntimeError):
        network = build()
        macs = count_macs(network, (1, channels, *patch), device="cpu")
    return count_parameters(network), 2.0 * macs, patch


def _log_lines(fold_folder: Path) -> list[tuple[list[str], Path]]:
    return [(path.read_text(errors="replace").splitlines(), path)
            for path in sorted(fold_folder.glob("training_log_*.txt"))]


def _time(line: str) -> datetime | None:
    match = TIMESTAMP.match(line)
    return datetime.fromisoformat(match.group(1)) if match else None


def validation_seconds_per_case(lines: list[str]) -> float | None:
    """Seconds from the first 'predicting CASE' to 'Validation complete', per case, in one training log."""
    starts = [_time(line) for line in lines if ": predicting " in line]
    ends = [_time(line) for line in lines if "Validation complete" in line]
    if not starts or not ends or starts[0] is None or ends[-1] is None:
        return None
    return (ends[-1] - starts[0]).total_seconds() / len(starts)


def model_cost(model: Model, trainer_class: type) -> Cost:
    cost = Cost()
    cost.parameters, cost.flops, cost.patch_size = network_size(model, trainer_class)
    epoch_times, per_case, peaks = [], [], []
    for fold in model.folds:
        logs = _log_lines(model.folder / f"fold_{fold}")
        for lines, _ in logs:
            epoch_times += [float(m.group(1)) for line in lines if (m := EPOCH_TIME.search(line))]
            for line in lines:
                if match := PEAK_MEMORY.search(line):
                    value = float(match.group(1))
                    peaks.append(value * 1024 if match.group(2).lower().startswith("g") else value)
        validated = [s for lines, _ in logs if (s := validation_seconds_per_case(lines)) is not None]
        if validated:
            per_case.append(validated[-1])  # the latest validation of this fold
    cost.epochs_logged = len(epoch_times)
    cost.epoch_seconds = float(np.mean(epoch_times)) if epoch_times else None
    cost.seconds_per_case = float(np.mean(per_case)) if per_case else None
    cost.peak_memory_mib = max(peaks) if peaks else None
    return cost


# ---- statistics --------------------------------------------------------------------------------------------------

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Comparison:
    reference: str
    cases: int  # paired cases (both have a per-case mean Dice)
    mean_difference: float  # trainer - reference
    p_value: float
    rank_biserial: float
    ci_low: float = math.nan  # 95 % bootstrap confidence interval of mean_difference
    ci_high: float = math.nan
    holm_p: float = math.nan  # p_value adjusted over all trainers compared with the reference
    pairs: tuple[tuple[float, float], ...] = ()  # (trainer, reference) per-case mean Dice of the paired cases


def bootstrap_interval(differences: np.ndarray, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of paired differences (cases drawn with replacement)."""
    if differences.size == 0:
        return math.nan, math.nan
    draws = np.random.default_rng(seed).integers(0, differences.size, (resamples, differences.size))
    low, high = np.quantile(differences[draws].mean(axis=1), [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def holm_adjust(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN values stay NaN and are not counted as tests)."""
    tested = sorted((p, index) for index, p in enumerate(p_values) if not math.isnan(p))
    adjusted, running = [math.nan] * len(p_values), 0.0
    for rank, (p, index) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[index] = running
    return adjusted


def rank_biserial(differences: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation: (R+ - R-) / (R+ + R-) over the ranks of the non-zero |d|."""
    from scipy.stats import rankdata

    nonzero = differences[differences != 0]
    if nonzero.size == 0:
        return 0.0
    ranks = rankdata(np.abs(nonzero))
    return float((ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()) / ranks.sum())


def compare(values: dict[str, float], reference_values: dict[str, float], reference: str) -> Comparison:
    """Paired comparison of per-case values (case -> value) over the cases both have."""
    from scipy.stats import wilcoxon

    cases = sorted(c for c in values.keys() & reference_values.keys()
                   if not math.isnan(values[c]) and not math.isnan(reference_values[c]))
    differences = np.array([values[c] - reference_values[c] for c in cases])
    if not cases:
        return Comparison(reference, 0, math.nan, math.nan, math.nan)
    p_value = float(wilcoxon(differences).pvalue) if np.any(differences != 0) else 1.0
    return Comparison(reference, len(cases), float(differences.mean()), p_value, rank_biserial(differences),
                      *bootstrap_interval(differences), pairs=tuple((values[c], reference_values[c]) for c in cases))


# ---- the whole benchmark -----------------------------------------------------------------------------------------

@dataclass
class ModelSummary:
    model: Model
    cost: Cost
    cases: list[CaseMetrics]
    comparison: Comparison | None
    reference_note: str = ""

    def values(self, label: str, metric: str) -> list[float]:
        return [getattr(c, metric) for c in self.cases if c.label == label]

    def per_case_dice(self) -> dict[str, float]:
        return {c.case: c.dice for c in self.cases if c.label == MEAN_KEY}


def collect(dataset: str, configurations: list[str], trainers: list[str], plans: str | None = None,
            reference: str | None = None, folds: list[str] | None = None,
            tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM, definition: str = DEFAULT_SURFACE_DEFINITION,
            processes: int = 1) -> tuple[str, dict[str, str], list[ModelSummary]]:
    """(dataset name, label names, one summary per trainer x configuration, reference models excluded unless
    named in ``trainers``)."""
    from nnunet_ext.catalog import resolve_trainer

    if tolerance_mm <= 0:
        raise BenchmarkError(f"--nsd-tolerance must be > 0 mm (got {tolerance_mm}).")
    paths = checks.require_nnunet_paths()
    dataset_name = checks.find_dataset(dataset, paths)
    gt_folder = paths["nnUNet_preprocessed"] / dataset_name / "gt_segmentations"
    if not gt_folder.is_dir():
        raise BenchmarkError(f"No ground truth in {gt_folder}; run nnUNetv2_plan_and_preprocess -d {dataset_name[7:10]}"
                             f" (it copies the training labels there).")
    trainer_classes = {name: resolve_trainer(name) for name in dict.fromkeys(trainers)}
    models = find_models(paths["nnUNet_results"], dataset_name, trainers, configurations, plans, folds)
    plans = models[0].plans
    reference_name = reference or DEFAULT_REFERENCE
    reference_models: dict[str, Model | None] = {}
    for configuration in dict.fromkeys(configurations):
        named = [m for m in models if m.trainer == reference_name and m.configuration == configuration]
        if named:
            reference_models[configuration] = named[0]
            continue
        try:
            reference_models[configuration] = find_models(paths["nnUNet_results"], dataset_name, [reference_name],
                                                          [configuration], plans, folds)[0]
        except BenchmarkError as error:
            if reference is not None:  # asked for explicitly: say why it cannot be used
                raise BenchmarkError(f"Reference {reference_name}: {error}") from None
            reference_models[configuration] = None
    evaluated: dict[tuple[str, str], list[CaseMetrics]] = {}

    def cases_of(model: Model) -> list[CaseMetrics]:
        key = (model.trainer, model.configuration)
        if key not in evaluated:
            evaluated[key] = evaluate_model(model, gt_folder, tolerance_mm, definition, processes)
        return evaluated[key]

    summaries = []
    for model in models:
        summary = ModelSummary(model, model_cost(model, trainer_classes[model.trainer]), cases_of(model), None)
        reference_model = reference_models[model.configuration]
        if model.trainer == reference_name:
            summary.reference_note = "reference"
        elif reference_model is None:
            summary.reference_note = f"no results of the reference {reference_name}"
        else:
            reference_cases = {c.case: c.dice for c in cases_of(reference_model) if c.label == MEAN_KEY}
            summary.comparison = compare(summary.per_case_dice(), reference_cases, reference_name)
        summaries.append(summary)
    compared = [s for s in summaries if s.comparison]
    for s, holm_p in zip(compared, holm_adjust([s.comparison.p_value for s in compared])):
        s.comparison = replace(s.comparison, holm_p=holm_p)
    dataset_json = read_json(models[0].folder / "dataset.json")
    return dataset_name, label_names(dataset_json), summaries


def _format(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if not math.isnan(std) else f"{mean:.{digits}f}"


def _optional(value: float | None, pattern: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)


def _labels(summaries: list[ModelSummary]) -> list[str]:
    keys = dict.fromkeys(c.label for s in summaries for c in s.cases if c.label != MEAN_KEY)
    return [*keys, MEAN_KEY]


CSV_COLUMNS = ("trainer", "configuration", "plans", "label", "label_name", "folds", "missing_folds", "cases",
               "dice_mean", "dice_std", "hd95_mean_mm", "hd95_std_mm", "nsd_mean", "nsd_std", "nsd_tolerance_mm",
               "surface_definition", "parameters", "gflops_per_patch", "patch_size", "seconds_per_epoch",
               "epochs_logged", "seconds_per_case", "peak_memory_mib", "reference", "paired_cases", "dice_difference",
               "dice_difference_ci_low", "dice_difference_ci_high", "wilcoxon_p", "wilcoxon_p_holm", "rank_biserial")
SURFACE_DESCRIPTIONS = {
    "element": "surface elements on the voxel faces, each weighted by its area (Nikolov et al., 2021, as DeepMind's "
               "surface-distance computes it: comparable with published NSD and HD95)",
    "voxel": "boundary voxels, each weighted 1 (--surface-definition voxel, MONAI's default: not comparable with "
             "published NSD)",
}


def csv_rows(summaries: list[ModelSummary], names: dict[str, str], tolerance_mm: float,
             definition: str = DEFAULT_SURFACE_DEFINITION) -> list[dict]:
    rows = []
    for s in summaries:
        m, cost, comparison = s.model, s.cost, s.comparison
        for label in _labels(summaries):
            dice, hd95, nsd = (s.values(label, metric) for metric in ("dice", "hd95", "nsd"))
            is_mean = label == MEAN_KEY
            rows.append({
                "trainer": m.trainer, "configuration": m.configuration, "plans": m.plans, "label": label,
                "label_name": names.get(label, "foreground mean" if is_mean else label),
                "folds": " ".join(m.folds), "missing_folds": " ".join(m.missing_folds), "cases": len(dice),
                "dice_mean": _nanmean(dice), "dice_std": _nanstd(dice), "hd95_mean_mm": _nanmean(hd95),
                "hd95_std_mm": _nanstd(hd95), "nsd_mean": _nanmean(nsd), "nsd_std": _nanstd(nsd),
                "nsd_tolerance_mm": tolerance_mm, "surface_definition": definition, "parameters": cost.parameters,
                "gflops_per_patch": cost.flops / 1e9 if cost.flops is not None else None,
                "patch_size": "x".join(map(str, cost.patch_size)), "seconds_per_epoch": cost.epoch_seconds,
                "epochs_logged": cost.epochs_logged, "seconds_per_case": cost.seconds_per_case,
                "peak_memory_mib": cost.peak_memory_mib,
                "reference": comparison.reference if comparison and is_mean else s.reference_note if is_mean else "",
                "paired_cases": comparison.cases if comparison and is_mean else "",
                "dice_difference": comparison.mean_difference if comparison and is_mean else "",
                "dice_difference_ci_low": comparison.ci_low if comparison and is_mean else "",
                "dice_difference_ci_high": comparison.ci_high if comparison and is_mean else "",
                "wilcoxon_p": comparison.p_value if comparison and is_mean else "",
                "wilcoxon_p_holm": comparison.holm_p if comparison and is_mean else "",
                "rank_biserial": comparison.rank_biserial if comparison and is_mean else "",
            })
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)


def write_cases_csv(path: Path, summaries: list[ModelSummary]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("trainer", "configuration", "fold", "case", "label", "dice", "hd95_mm", "nsd"))
        for s in summaries:
            writer.writerows((c.trainer, c.configuration, c.fold, c.case, c.label, c.dice, c.hd95, c.nsd)
                             for c in s.cases)


def markdown(dataset_name: str, names: dict[str, str], summaries: list[ModelSummary], tolerance_mm: float,
             ensemble_report: str | None, definition: str = DEFAULT_SURFACE_DEFINITION) -> str:
    labels = _labels(summaries)
    title = {label: names.get(label, "mean" if label == MEAN_KEY else label) for label in labels}
    lines = [f"# Cross-validation benchmark: {dataset_name}", "",
             f"Plans {summaries[0].model.plans}. Mean ± standard deviation over the validation cases of all folds "
             f"found. Dice from nnU-Net's summary.json; HD95 in mm; NSD at a tolerance of {tolerance_mm:g} mm; "
             f"'mean' is the per-case mean over the foreground labels/regions. Surfaces for HD95 and NSD: "
             f"{SURFACE_DESCRIPTIONS[definition]}.", ""]
    tables = (("dice", "Dice", 3), ("hd95", "HD95 (mm)", 2), ("nsd", f"NSD @ {tolerance_mm:g} mm", 3))
    for metric, header, digits in tables:
        lines += [f"## {header}", "", "| trainer | configuration | folds | cases | "
                  + " | ".join(title[label] for label in labels) + " |",
                  "|---|---|---|---|" + "---|" * len(labels)]
        for s in summaries:
            cells = [_format(_nanmean(v), _nanstd(v), digits) for v in (s.values(label, metric) for label in labels)]
            lines.append(f"| {s.model.trainer} | {s.model.configuration} | {', '.join(s.model.folds)} | "
                         f"{len(s.values(MEAN_KEY, 'dice'))} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Cost and paired comparison", "",
              "FLOPs: one forward pass of one patch of the plan (2 per multiply-accumulate). Time per case: nnU-Net's "
              "validation (sliding window and export), from the training log. Comparison: per-case mean Dice against "
              "the reference: mean difference with its 95 % bootstrap confidence interval (10,000 resamples of the "
              "paired cases), Wilcoxon signed-rank test (two-sided) with the p-values Holm-adjusted over all "
              "trainers compared, and matched-pairs rank-biserial correlation r (> 0: better than the reference).", "",
              "| trainer | configuration | parameters | GFLOPs | patch | s / epoch | s / case | peak memory (MiB) | "
              "ΔDice vs reference | 95 % CI | p | p (Holm) | r | paired cases |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        c, cmp = s.cost, s.comparison
        interval = ("" if cmp is None else "n/a" if math.isnan(cmp.ci_low)
                    else f"[{cmp.ci_low:+.3f}, {cmp.ci_high:+.3f}]")
        stats = ([f"{cmp.mean_difference:+.3f} ({cmp.reference})" if not math.isnan(cmp.mean_difference) else "n/a",
                  interval, _optional(cmp.p_value, "{:.3g}"), _optional(cmp.holm_p, "{:.3g}"),
                  _optional(cmp.rank_biserial, "{:+.2f}"), str(cmp.cases)]
                 if cmp else [s.reference_note, "", "", "", "", ""])
        lines.append(f"| {s.model.trainer} | {s.model.configuration} | {c.parameters:,} | {c.flops / 1e9:.1f} | "
                     f"{'x'.join(map(str, c.patch_size))} | {_optional(c.epoch_seconds, '{:.1f}')} | "
                     f"{_optional(c.seconds_per_case, '{:.1f}')} | {_optional(c.peak_memory_mib, '{:.0f}')} | "
                     + " | ".join(stats) + " |")
    missing = [s for s in summaries if s.model.missing_folds]
    lines += ["", "## Missing folds", ""]
    lines += ([f"- {s.model.trainer} {s.model.configuration}: fold(s) {', '.join(s.model.missing_folds)} have no "
               f"validation/summary.json (not included above)" for s in missing] or ["None."])
    if ensemble_report:
        lines += ["", "## Best model or ensemble (nnU-Net's find_best_configuration)", "", ensemble_report]
    return "\n".join(lines) + "\n"


def _boxes_per_label(axis, summaries: list[ModelSummary], labels: list[str], titles: dict[str, str],
                     metric: str) -> None:
    """One box per model and label or region, the cases scattered over it (so no separate outlier markers)."""
    jitter = np.random.default_rng(0)
    width = 0.8 / len(summaries)
    for index, summary in enumerate(summaries):
        positions = np.arange(len(labels)) - 0.4 + width * (index + 0.5)
        values = [[v for v in summary.values(label, metric) if not math.isnan(v)] for label in labels]
        colour = f"C{index}"
        axis.boxplot(values, positions=positions, widths=width * 0.8, showfliers=False, manage_ticks=False,
                     boxprops={"color": colour}, medianprops={"color": colour}, whiskerprops={"color": colour},
                     capprops={"color": colour})
        for position, case_values in zip(positions, values):
            axis.scatter(position + jitter.uniform(-width / 5, width / 5, len(case_values)), case_values, s=10,
                         alpha=0.7, color=colour, zorder=3,
                         label=summary.model.name if position == positions[0] else None)
    axis.set_xticks(range(len(labels)), [titles[label] for label in labels], fontsize=8)
    axis.grid(axis="y", alpha=0.3)


def _paired_cases(axis, summaries: list[ModelSummary]) -> None:
    """Per case: each model's mean Dice against the reference's; above the diagonal, better than the reference."""
    for index, summary in enumerate(summaries):
        if summary.comparison and summary.comparison.pairs:
            ours, reference = np.array(summary.comparison.pairs).T
            axis.scatter(reference, ours, s=14, alpha=0.7, color=f"C{index}", label=summary.model.name)
    (x_low, x_high), (y_low, y_high) = axis.get_xlim(), axis.get_ylim()
    low, high = (min(x_low, y_low), max(x_high, y_high)) if axis.collections else (0.0, 1.0)
    axis.plot([low, high], [low, high], color="grey", linewidth=0.8, zorder=0)
    axis.set_xlim(low, high)
    axis.set_ylim(low, high)
    references = sorted({s.comparison.reference for s in summaries if s.comparison})
    axis.set_xlabel(f"reference ({', '.join(references) or 'none with results'}): per-case Dice")
    axis.set_ylabel("model: per-case Dice")
    axis.set_title("Paired cases (mean over foreground)")


def _differences(axis, summaries: list[ModelSummary]) -> None:
    """Mean Dice difference to the reference with its bootstrap 95 % interval and the Holm-adjusted p-value."""
    compared = [(i, s) for i, s in enumerate(summaries) if s.comparison and s.comparison.cases]
    for row, (index, summary) in enumerate(compared):
        c = summary.comparison
        axis.errorbar(c.mean_difference, row, xerr=[[c.mean_difference - c.ci_low], [c.ci_high - c.mean_difference]],
                      fmt="o", color=f"C{index}", capsize=4)
        axis.annotate(f"{summary.model.name}\np (Holm) {c.holm_p:.2g}", (c.mean_difference, row),
                      textcoords="offset points", xytext=(0, 8), ha="center", fontsize=7)
    axis.axvline(0, color="grey", linewidth=0.8)
    axis.set_yticks([])
    axis.set_ylim(-0.7, max(len(compared), 1) - 0.3)
    axis.set_xlabel("mean Dice difference to the reference (95 % bootstrap CI)")
    axis.set_title("Difference to the reference")


def plot(path: Path, summaries: list[ModelSummary], names: dict[str, str]) -> None:
    """Dice, HD95 and NSD per label or region (box plots with the cases); paired per-case Dice against the
    reference; the mean Dice difference with its interval; mean Dice against FLOPs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = _labels(summaries)
    titles = {label: names.get(label, label) for label in labels}
    figure, axes = plt.subplots(2, 3, figsize=(9 + 1.2 * len(labels) * len(summaries) ** 0.5, 9.5))
    for axis, (metric, title) in zip(axes[0], (("dice", "Dice"), ("hd95", "HD95 (mm)"), ("nsd", "NSD"))):
        _boxes_per_label(axis, summaries, labels, titles, metric)
        axis.set_title(f"{title} per case")
    handles, legend_labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, legend_labels, loc="lower center", ncol=min(len(summaries), 3), fontsize=8)
    _paired_cases(axes[1, 0], summaries)
    _differences(axes[1, 1], summaries)
    cost = axes[1, 2]
    for index, summary in enumerate(summaries):
        values = [v for v in summary.values(MEAN_KEY, "dice") if not math.isnan(v)]
        cost.scatter(summary.cost.flops / 1e9, np.mean(values) if values else np.nan, s=50, color=f"C{index}")
    cost.set_xlabel("GFLOPs per patch (forward pass)")
    cost.set_ylabel("mean Dice")
    cost.set_title("Dice vs cost")
    cost.margins(0.2)
    cost.grid(alpha=0.3)
    figure.tight_layout(rect=(0, 0.04 * (1 + (len(summaries) - 1) // 3), 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run_streaming(command: list[str]) -> tuple[int, str]:
    """Run ``command``, printing its output (stdout and stderr) as it comes; returns (exit code, the output)."""
    import io

    lines = []
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}  # a Python child prints each line, not 8 KiB blocks
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=environment) as process:
        # newline="": a progress bar's carriage returns reach the terminal as they are
        for line in io.TextIOWrapper(process.stdout, encoding="utf-8", errors="replace", newline=""):
            print(line, end="", flush=True)
            lines.append(line)
    return process.returncode, "".join(lines)


def run_find_best_configuration(dataset_name: str, summaries: list[ModelSummary], processes: int) -> str:
    """nnU-Net's own model/ensemble selection over the folds every model has; returns a markdown report."""
    from nnunet_ext.crossval import console_script

    folds = sorted(set.intersection(*(set(s.model.folds) for s in summaries)) - {"all"}, key=int)
    if not folds:
        raise BenchmarkError("--ensemble needs folds that every model has; these models share none.")
    for s in summaries:
        for fold in folds:
            if not any((s.model.folder / f"fold_{fold}" / "validation").glob("*.npz")):
                raise BenchmarkError(f"{s.model.folder.name} fold {fold} has no .npz probabilities, which ensembling "
                                     f"needs: rerun its validation with nnunet-ext cv (it adds --npz).")
    trainers = list(dict.fromkeys(s.model.trainer for s in summaries))
    configurations = list(dict.fromkeys(s.model.configuration for s in summaries))
    command = [console_script("nnUNetv2_find_best_configuration"), dataset_name[7:10], "-c", *configurations,
               "-tr", *trainers, "-p", summaries[0].model.plans, "-f", *folds, "-np", str(processes)]
    returncode, output = run_streaming(command)
    if returncode != 0:
        raise RuntimeError(f"nnUNetv2_find_best_configuration failed (exit {returncode}):\n{output[-3000:]}")
    results = Path(os.environ["nnUNet_results"]) / dataset_name
    information = read_json(results / "inference_information.json")
    best = information["best_model_or_ensemble"]
    chosen = " + ".join(f"{m['trainer']} {m['configuration']}" for m in best["selected_model_or_models"])
    kind = "ensemble" if len(best["selected_model_or_models"]) > 1 else "single model"
    lines = [f"Folds {', '.join(folds)}. Foreground Dice of every candidate (nnU-Net's cross-validation "
             f"accumulation; ensembles average the .npz probabilities):", "",
             "| model or ensemble | Dice |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in information["all_results"].items()]
    lines += ["", f"Best: **{chosen}** ({kind}), Dice {best['result_on_crossval_pre_pp']:.4f}, "
                  f"{best['result_on_crossval_post_pp']:.4f} after nnU-Net's postprocessing.", "",
              "Inference commands, as nnU-Net writes them:", "", "```",
              (results / "inference_instructions.txt").read_text().strip(), "```"]
    return "\n".join(lines)


def run_benchmark(dataset: str, configurations: list[str], trainers: list[str], output: str | os.PathLike,
                  plans: str | None = None, reference: str | None = None, folds: list[str] | None = None,
                  tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM, ensemble: bool = False,
                  processes: int = 1, overwrite: bool = False,
                  definition: str = DEFAULT_SURFACE_DEFINITION) -> Path:
    """The ``nnunet-ext benchmark`` command; returns the output folder. Existing outputs are replaced only with
    ``overwrite``."""
    output = Path(output)
    existing = [output / name for name in OUTPUT_FILES if (output / name).exists()]
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"-o {output} is a file; give a folder for {', '.join(OUTPUT_FILES)}.")
    if existing and not overwrite:
        raise FileExistsError(f"{output} holds a benchmark already ({', '.join(p.name for p in existing)}). Pass "
                              "--overwrite to replace it, or give another -o folder.")
    dataset_name, names, summaries = collect(dataset, configurations, trainers, plans, reference, folds, tolerance_mm,
                                             definition, processes)
    for s in summaries:
        if s.model.missing_folds:
            print(f"Missing folds: {s.model.trainer} {s.model.configuration} has no validation/summary.json for "
                  f"fold(s) {', '.join(s.model.missing_folds)}; benchmarking folds {', '.join(s.model.folds)}.")
    ensemble_report = run_find_best_configuration(dataset_name, summaries, processes) if ensemble else None
    output.mkdir(parents=True, exist_ok=True)
    write_csv(output / "benchmark.csv", csv_rows(summaries, names, tolerance_mm, definition))
    write_cases_csv(output / "benchmark_cases.csv", summaries)
    text = markdown(dataset_name, names, summaries, tolerance_mm, ensemble_report, definition)
    (output / "benchmark.md").write_text(text)
    plot(output / "benchmark.png", summaries, names)
    print(text)
    print(f"Wrote {output / 'benchmark.md'}, benchmark.csv, benchmark_cases.csv and benchmark.png")
    return output
