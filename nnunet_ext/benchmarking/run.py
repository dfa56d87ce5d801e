"""The whole benchmark: ``collect`` evaluates and compares the models, ``run_benchmark`` (the ``nnunet-ext
benchmark`` command) writes the tables and the figure."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from nnunet_ext import checks, datasets
from nnunet_ext.benchmarking.cost import model_cost
from nnunet_ext.benchmarking.ensemble import run_find_best_configuration
from nnunet_ext.benchmarking.evaluation import (DEFAULT_NSD_TOLERANCE_MM, MEAN_KEY, CaseMetrics, evaluate_model,
                                                label_names)
from nnunet_ext.benchmarking.figure import plot
from nnunet_ext.benchmarking.results import BenchmarkError, Model, find_models, read_json
from nnunet_ext.benchmarking.statistics import compare, holm_adjust
from nnunet_ext.benchmarking.summary import ModelSummary
from nnunet_ext.benchmarking.tables import csv_rows, markdown, write_cases_csv, write_csv
from nnunet_ext.surface_metrics import DEFAULT_SURFACE_DEFINITION

DEFAULT_REFERENCE = "nnUNetTrainer"
OUTPUT_FILES = ("benchmark.md", "benchmark.csv", "benchmark_cases.csv", "benchmark.png")


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
    dataset_name = datasets.dataset_name(dataset)
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
