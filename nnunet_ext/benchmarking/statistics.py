"""Each trainer against the reference trainer: paired tests and intervals on the per-case mean Dice.

Statistics: mean ± standard deviation over all validation cases of all folds found; each trainer against a
reference trainer (default nnU-Net's ``nnUNetTrainer``) on the per-case mean foreground Dice of the cases both
have: Wilcoxon signed-rank test (scipy, two-sided, zero differences dropped) and the matched-pairs rank-biserial
correlation (Kerby, 2014; +1: the trainer is better on every case, -1: worse); with several trainers, the
p-values also Holm-adjusted over all of them (Holm, 1979); a 95 % confidence interval of the mean difference from
a percentile bootstrap of the paired cases (10,000 resamples, seeded: the same figures every run).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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
