"""The benchmark's tables: ``benchmark.csv`` (one row per model and label or region), ``benchmark_cases.csv``
(one row per case) and ``benchmark.md`` (the report)."""
from __future__ import annotations

import csv
import math
from pathlib import Path

from nnunet_ext.benchmarking.evaluation import MEAN_KEY, nanmean, nanstd
from nnunet_ext.benchmarking.summary import ModelSummary, label_keys
from nnunet_ext.surface_metrics import DEFAULT_SURFACE_DEFINITION


def _format(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if not math.isnan(std) else f"{mean:.{digits}f}"


def _optional(value: float | None, pattern: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)


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
        for label in label_keys(summaries):
            dice, hd95, nsd = (s.values(label, metric) for metric in ("dice", "hd95", "nsd"))
            is_mean = label == MEAN_KEY
            rows.append({
                "trainer": m.trainer, "configuration": m.configuration, "plans": m.plans, "label": label,
                "label_name": names.get(label, "foreground mean" if is_mean else label),
                "folds": " ".join(m.folds), "missing_folds": " ".join(m.missing_folds), "cases": len(dice),
                "dice_mean": nanmean(dice), "dice_std": nanstd(dice), "hd95_mean_mm": nanmean(hd95),
                "hd95_std_mm": nanstd(hd95), "nsd_mean": nanmean(nsd), "nsd_std": nanstd(nsd),
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
    labels = label_keys(summaries)
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
            cells = [_format(nanmean(v), nanstd(v), digits) for v in (s.values(label, metric) for label in labels)]
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
