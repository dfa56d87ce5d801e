"""The benchmark's figure, ``benchmark.png``: per-case metrics, the paired comparison and the cost."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nnunet_ext.benchmarking.evaluation import MEAN_KEY
from nnunet_ext.benchmarking.summary import ModelSummary, label_keys


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

    labels = label_keys(summaries)
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
