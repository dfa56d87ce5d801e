"""The benchmark's statistics on small hand-made inputs, checked against computations written here: Holm's adjusted
p-values, the bootstrap interval of a mean difference (against the exact bootstrap distribution), the output of a
child process (nnU-Net's find_best_configuration for --ensemble) streamed while it runs, and the picture's box plots."""
import io
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from nnunet_ext.benchmarking.cost import Cost
from nnunet_ext.benchmarking.ensemble import run_streaming
from nnunet_ext.benchmarking.evaluation import MEAN_KEY, CaseMetrics
from nnunet_ext.benchmarking.figure import _boxes_per_label, plot
from nnunet_ext.benchmarking.results import Model
from nnunet_ext.benchmarking.statistics import bootstrap_interval, compare, holm_adjust
from nnunet_ext.benchmarking.summary import ModelSummary


def test_holm_adjusted_p_values_by_hand():
    # sorted: 0.01 (x3), 0.03 (x2), 0.04 (x1, but never below the previous adjusted value); NaN is no test
    adjusted = holm_adjust([0.04, 0.01, math.nan, 0.03])
    assert [adjusted[0], adjusted[1], adjusted[3]] == pytest.approx([0.06, 0.03, 0.06]) and math.isnan(adjusted[2])
    assert holm_adjust([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    assert holm_adjust([0.02]) == [0.02]  # one comparison: unchanged
    p_values = np.random.default_rng(3).uniform(0, 0.2, 6).tolist()
    for index, p in enumerate(p_values):  # Holm's definition: the largest step-down product up to this rank
        ranked = sorted(p_values)
        rank = ranked.index(p)
        expected = min(1.0, max((len(ranked) - j) * ranked[j] for j in range(rank + 1)))
        assert holm_adjust(p_values)[index] == pytest.approx(expected)


def _exact_bootstrap_quantile(values: np.ndarray, probability: float) -> float:
    """The quantile of the means of all n^n equally likely resamples (with the same interpolation as numpy's)."""
    means = np.sort([np.mean(draw) for draw in itertools.product(values, repeat=len(values))])
    return float(np.quantile(means, probability))


def test_bootstrap_interval_against_the_exact_bootstrap_distribution():
    differences = np.array([0.12, -0.03, 0.05, 0.31, -0.08, 0.02])
    low, high = bootstrap_interval(differences)
    spread = differences.max() - differences.min()
    assert low == pytest.approx(_exact_bootstrap_quantile(differences, 0.025), abs=0.01 * spread)
    assert high == pytest.approx(_exact_bootstrap_quantile(differences, 0.975), abs=0.01 * spread)
    assert low < differences.mean() < high
    assert bootstrap_interval(differences) == (low, high)  # seeded: the same every run
    assert bootstrap_interval(np.array([0.2])) == pytest.approx((0.2, 0.2))
    assert all(math.isnan(v) for v in bootstrap_interval(np.array([])))


def test_compare_holds_interval_and_pairs():
    ours = {"a": 0.8, "b": 0.7, "c": 0.9, "d": math.nan}
    reference = {"a": 0.7, "b": 0.75, "c": 0.6, "d": 0.5, "e": 0.4}
    comparison = compare(ours, reference, "nnUNetTrainer")
    assert comparison.cases == 3 and comparison.pairs == ((0.8, 0.7), (0.7, 0.75), (0.9, 0.6))
    assert comparison.mean_difference == pytest.approx(0.35 / 3)
    expected = bootstrap_interval(np.array([0.8 - 0.7, 0.7 - 0.75, 0.9 - 0.6]))
    assert (comparison.ci_low, comparison.ci_high) == pytest.approx(expected)


def test_a_child_process_output_is_shown_while_it_runs(tmp_path, monkeypatch):
    """The child prints a line (without flushing, as nnU-Net's scripts do), then waits until the parent has shown
    it: only an output read and echoed line by line while the child runs lets the child finish in time."""
    shown = tmp_path / "shown"
    child = (f"import pathlib, time\nprint('evaluating fold 0')\ndeadline = time.time() + 60\n"
             f"while not pathlib.Path({str(shown)!r}).exists() and time.time() < deadline:\n    time.sleep(0.05)\n"
             f"print('released' if pathlib.Path({str(shown)!r}).exists() else 'waited in vain')")

    class Terminal(io.StringIO):
        def write(self, text: str) -> int:
            if "evaluating fold 0" in text:
                shown.touch()
            return super().write(text)

    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    returncode, output = run_streaming([sys.executable, "-c", child])
    assert returncode == 0 and output.splitlines() == ["evaluating fold 0", "released"]
    assert terminal.getvalue() == output


def _summary(trainer: str, dice: list[float], reference: dict[str, float] | None = None):
    model = Model(trainer, "nnUNetPlans", "3d_fullres", Path("."), ["0"], [])
    cases = [CaseMetrics(trainer, "3d_fullres", "0", f"case_{i}", label, d, 10 * (1 - d), d)
             for i, d in enumerate(dice) for label in ("1", MEAN_KEY)]
    summary = ModelSummary(model, Cost(flops=1e9), cases, None)
    if reference is not None:
        summary.comparison = compare(summary.per_case_dice(), reference, "nnUNetTrainer")
    return summary


def test_the_picture_draws_each_case_once(tmp_path):
    """Box plots without outlier markers (the cases are scattered over them), one point per case and model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reference = _summary("nnUNetTrainer", [0.8, 0.82, 0.79, 0.81, 0.2])  # 0.2: an outlier of a box plot
    ours = _summary("Ours", [0.85, 0.8, 0.84, 0.86, 0.3], reference.per_case_dice())
    figure, axis = plt.subplots()
    _boxes_per_label(axis, [reference, ours], ["1", MEAN_KEY], {"1": "organ", "mean": "mean"}, "dice")
    assert [line for line in axis.lines if line.get_marker() not in ("None", None, "")] == []  # no flier markers
    assert sorted(len(points.get_offsets()) for points in axis.collections) == [5, 5, 5, 5]
    plt.close(figure)
    plot(tmp_path / "benchmark.png", [reference, ours], {"1": "organ"})
    assert (tmp_path / "benchmark.png").stat().st_size > 10_000
