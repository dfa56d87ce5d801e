"""What the benchmark knows of one model, the input of its tables, figure and ensemble step."""
from __future__ import annotations

from dataclasses import dataclass

from nnunet_ext.benchmarking.cost import Cost
from nnunet_ext.benchmarking.evaluation import MEAN_KEY, CaseMetrics
from nnunet_ext.benchmarking.results import Model
from nnunet_ext.benchmarking.statistics import Comparison


@dataclass
class ModelSummary:
    """One model's cost, per-case metrics and comparison with the reference (None: not compared; then
    ``reference_note`` says why)."""

    model: Model
    cost: Cost
    cases: list[CaseMetrics]
    comparison: Comparison | None
    reference_note: str = ""

    def values(self, label: str, metric: str) -> list[float]:
        return [getattr(c, metric) for c in self.cases if c.label == label]

    def per_case_dice(self) -> dict[str, float]:
        return {c.case: c.dice for c in self.cases if c.label == MEAN_KEY}


def label_keys(summaries: list[ModelSummary]) -> list[str]:
    """The label or region keys of the summaries' cases in order of appearance, MEAN_KEY last."""
    keys = dict.fromkeys(c.label for s in summaries for c in s.cases if c.label != MEAN_KEY)
    return [*keys, MEAN_KEY]
