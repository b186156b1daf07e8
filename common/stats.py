"""The report's statistics, pure numpy: bootstrap intervals, paired tests, Holm's correction, claim verdicts.

Success rates are fractions in [0, 1]; effects are differences of them (0.30 = 30 points). Every function takes
an explicit seed, so a report is reproducible to the last digit.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Literal, Sequence

import numpy as np

Verdict = Literal["supported", "contradicted", "inconclusive"]
_EXACT_MAX_PAIRS = 15  # up to 2^15 sign patterns are enumerated exactly; beyond, they are sampled


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean with its bootstrap confidence interval."""

    mean: float
    lo: float
    hi: float
    n: int


@dataclasses.dataclass(frozen=True)
class PairedResult:
    """Treatment minus reference over matched pairs: mean difference, its interval, a two-sided p-value."""

    n: int
    mean_diff: float
    lo: float
    hi: float
    p_value: float


def bootstrap_mean(values: Sequence[float] | np.ndarray, resamples: int, seed: int, level: float = 0.95) -> Interval:
    """Percentile bootstrap interval of the mean (e.g. of per-seed success rates)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"bootstrap_mean needs a non-empty 1-D sample, got shape {x.shape}")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)  # (resamples,)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return Interval(float(x.mean()), float(lo), float(hi), int(x.size))


def sign_flip_p_value(diffs: np.ndarray, permutations: int, seed: int) -> float:
    """Two-sided paired permutation test of mean(diffs) = 0: flip the sign of each pair's difference.

    Exact (all 2^n sign patterns) for n <= 15 pairs, else `permutations` random patterns with the +1 correction
    that keeps the test valid.
    """
    d = np.asarray(diffs, dtype=np.float64)
    observed = abs(d.mean())
    tolerance = 1e-12 * max(1.0, observed)  # ties count as at least as extreme
    if d.size <= _EXACT_MAX_PAIRS:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))  # (2^n, n)
        return float(np.mean(np.abs(signs @ d / d.size) >= observed - tolerance))
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(permutations, d.size))
    extreme = np.sum(np.abs(signs @ d / d.size) >= observed - tolerance)
    return float((extreme + 1) / (permutations + 1))


def paired_comparison(treatment: Sequence[float] | np.ndarray, reference: Sequence[float] | np.ndarray,
                      resamples: int, permutations: int, seed: int, level: float = 0.95) -> PairedResult:
    """Treatment vs reference on matched pairs (same seed, task and suite): bootstrap CI + sign-flip p-value."""
    t, r = np.asarray(treatment, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if t.shape != r.shape or t.ndim != 1 or t.size == 0:
        raise ValueError(f"paired_comparison needs two equal-length 1-D samples, got {t.shape} and {r.shape}")
    diffs = t - r
    interval = bootstrap_mean(diffs, resamples, seed, level)
    return PairedResult(int(diffs.size), interval.mean, interval.lo, interval.hi,
                        sign_flip_p_value(diffs, permutations, seed + 1))


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    m = p.size
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])  # (m - i) * p_(i), made monotone
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def verdict(result: PairedResult, p_adjusted: float, alpha: float, min_effect: float) -> Verdict:
    """A claim that the treatment beats the reference, judged on one paired comparison.

    supported: significant (Holm-adjusted p < alpha) and positive. contradicted: significant and negative, or
    the interval rules out any gain of `min_effect` or more (hi < min_effect). inconclusive: anything else, i.e.
    the study lacks the power to tell.
    """
    if p_adjusted < alpha and result.mean_diff > 0:
        return "supported"
    if (p_adjusted < alpha and result.mean_diff < 0) or result.hi < min_effect:
        return "contradicted"
    return "inconclusive"
