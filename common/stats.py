"""The report's statistics, pure numpy/scipy: intervals, tests, Holm's correction, power, claim verdicts.

Success rates are fractions in [0, 1]; effects are differences of them (0.30 = 30 points). Every function takes
an explicit seed, so a report is reproducible to the last digit.

The training seed is the unit of replication: every (task, suite) cell of one seed comes from the same trained
model, so cells are not independent pairs. Seed-level tools: `seed_t_test` (p-values), `hierarchical_bootstrap`
(intervals), `variance_parts` and `minimum_detectable_effect` (power). The cell-level `paired_comparison` treats
cells as independent; it is kept for data whose pairs really are independent and to show the contrast (tests).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Literal, Protocol, Sequence

import numpy as np
from scipy import stats as scipy_stats

Verdict = Literal["supported", "contradicted", "inconclusive"]
_EXACT_MAX_PAIRS = 15  # up to 2^15 sign patterns are enumerated exactly; beyond, they are sampled


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean with its bootstrap confidence interval (n: the number of replication units, seeds here)."""

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

    @property
    def upper(self) -> float:
        """The upper end of the difference's interval (what a verdict reads)."""
        return self.hi


@dataclasses.dataclass(frozen=True)
class SeedTest:
    """A paired t-test on per-seed values (differences): mean, t interval, two-sided p (NaN: not estimable)."""

    n: int
    mean: float
    sd: float  # of the per-seed values (ddof 1); NaN for one seed
    lo: float
    hi: float
    p_value: float


@dataclasses.dataclass(frozen=True)
class Arm:
    """Success counts of one side of an estimate; a group of strategies is averaged with equal weights.

    Shapes (S, G, C): seed, strategy of the group, (task, suite) cell. `shared`: one policy without a training
    seed (S = 1) set against every seed of the other arms, e.g. a reference policy. `outcomes` (S, G, C, E): each
    episode's success (1/0), NaN past a cell's n, with episode e of a cell the same episode (layout and simulator
    seed) for every policy: arms that all carry them are paired, and their episode sampling is that of the paired
    differences (`paired_outcomes`).
    """

    successes: np.ndarray
    n: np.ndarray
    sign: float = 1.0
    shared: bool = False
    outcomes: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class VarianceParts:
    """Variance of a per-seed difference: observed, within-seed episode sampling, between seeds (training)."""

    observed: float  # sample variance over seeds (NaN for one seed)
    within: float  # mean over seeds of the binomial sampling variance of the seed's value
    between: float  # observed - within, floored at 0 (NaN for one seed)


@dataclasses.dataclass(frozen=True)
class SeedComparison:
    """Treatment minus reference with the training seed as the unit: per-seed differences, t-test, intervals."""

    n_seeds: int
    mean_diff: float
    lo: float  # hierarchical bootstrap interval
    hi: float
    t_lo: float  # t interval over seeds (NaN: not estimable)
    t_hi: float
    p_value: float  # paired t-test over seeds (NaN: one seed, or every seed the same)
    per_seed: tuple[float, ...]

    @property
    def upper(self) -> float:
        """The higher of the two intervals' upper ends: a gain is ruled out only if both rule it out."""
        return self.hi if math.isnan(self.t_hi) else max(self.hi, self.t_hi)


class Effect(Protocol):
    """Anything with a mean difference and the upper end of its interval (what a verdict reads)."""

    @property
    def mean_diff(self) -> float:
        """Treatment minus reference."""

    @property
    def upper(self) -> float:
        """Upper end of the difference's interval."""


def bootstrap_mean(values: Sequence[float] | np.ndarray, resamples: int, seed: int, level: float = 0.95) -> Interval:
    """Percentile bootstrap interval of the mean of independent values."""
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
    """Treatment vs reference on independent matched pairs: bootstrap CI + sign-flip p-value."""
    t, r = np.asarray(treatment, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if t.shape != r.shape or t.ndim != 1 or t.size == 0:
        raise ValueError(f"paired_comparison needs two equal-length 1-D samples, got {t.shape} and {r.shape}")
    diffs = t - r
    interval = bootstrap_mean(diffs, resamples, seed, level)
    return PairedResult(int(diffs.size), interval.mean, interval.lo, interval.hi,
                        sign_flip_p_value(diffs, permutations, seed + 1))


def seed_t_test(values: Sequence[float] | np.ndarray, level: float = 0.95) -> SeedTest:
    """One-sample t-test of mean = 0 over seeds (n - 1 dof); p and interval NaN for one seed or zero variance."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"seed_t_test needs a non-empty 1-D sample, got shape {x.shape}")
    mean, nan = float(x.mean()), float("nan")
    if x.size < 2:
        return SeedTest(1, mean, nan, nan, nan, nan)
    sd = float(x.std(ddof=1))
    if sd <= 1e-12 * max(1.0, abs(mean)):  # every seed the same: no estimate of the training variance
        return SeedTest(int(x.size), mean, 0.0, nan, nan, nan)
    se = sd / math.sqrt(x.size)
    half = float(scipy_stats.t.ppf(0.5 + level / 2, x.size - 1)) * se
    p = float(2 * scipy_stats.t.sf(abs(mean) / se, x.size - 1))
    return SeedTest(int(x.size), mean, sd, mean - half, mean + half, p)


def _pooled(successes: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Episode-weighted success rate over the last axis (cells)."""
    return successes.sum(axis=-1) / n.sum(axis=-1)


def seed_values(arms: Sequence[Arm]) -> np.ndarray:
    """(S,) the estimate per seed: signed sum over arms of the group mean of pooled (episode-weighted) rates."""
    out = np.zeros(max(a.successes.shape[0] for a in arms))
    for arm in arms:
        out = out + arm.sign * _pooled(arm.successes, arm.n).mean(axis=-1)  # (S,), or (1,) for a shared arm
    return out


def paired_outcomes(arms: Sequence[Arm]) -> tuple[np.ndarray, np.ndarray] | None:
    """Each episode's contribution to the per-seed value, when every arm's episodes are the same episodes.

    Returns z (S, C, E), the signed sum over arms of the group mean of the episode's outcomes (NaN past a cell's
    n), and n (C,); `seed_values` is then the mean of z over a seed's episodes. None when an arm has no outcomes,
    is shared (one policy for every seed), or covers other episodes than the rest.
    """
    if any(a.outcomes is None or a.shared for a in arms):
        return None
    padded = np.isnan(arms[0].outcomes[0, 0])  # type: ignore[index]  # (C, E)
    if any(a.outcomes.shape[0] != arms[0].outcomes.shape[0]  # type: ignore[union-attr]
           or a.outcomes.shape[2:] != padded.shape or not (np.isnan(a.outcomes) == padded).all()  # type: ignore
           for a in arms):
        return None
    z = sum(a.sign * a.outcomes.mean(axis=1) for a in arms)  # type: ignore[union-attr]  # (S, C, E)
    return z, (~padded).sum(axis=-1)


def sampling_variance(arms: Sequence[Arm]) -> np.ndarray:
    """(S,) variance of each seed's value from its episodes alone (unbiased per cell where n > 1).

    Paired arms (`paired_outcomes`): the variance of the mean of the episodes' contributions, stratified by cell, so
    that an episode that every policy fails (or solves) adds nothing to a difference. Otherwise each arm's binomial
    variance, summed as if the arms had drawn their episodes independently.
    """
    paired = paired_outcomes(arms)
    if paired is not None:
        z, n = paired
        squares = np.nansum((z - np.nanmean(z, axis=-1, keepdims=True)) ** 2, axis=-1)  # (S, C)
        flat = z.reshape(z.shape[0], -1)
        overall = np.nanvar(flat, axis=-1, ddof=1) if n.sum() > 1 else np.zeros(z.shape[0])  # (S,)
        # Unbiased per cell; a one-episode cell takes the variance over all of the seed's episodes.
        spread = np.where(n > 1, squares / np.maximum(n - 1, 1), overall[:, None])
        return (n * spread).sum(axis=-1) / n.sum() ** 2
    out = np.zeros(max(a.successes.shape[0] for a in arms))
    for arm in arms:
        k, n = arm.successes.astype(np.float64), arm.n.astype(np.float64)
        rate, pooled = k / n, _pooled(k, n)[..., None]  # (S, G, C), (S, G, 1)
        per_episode = np.where(n > 1, rate * (1 - rate) * n / np.maximum(n - 1, 1), pooled * (1 - pooled))
        var = (n * per_episode).sum(axis=-1) / n.sum(axis=-1) ** 2  # (S, G): variance of each pooled rate
        out = out + arm.sign ** 2 * var.sum(axis=-1) / var.shape[-1] ** 2
    return out


def variance_parts(values: np.ndarray, within: np.ndarray) -> VarianceParts:
    """Split the observed variance of per-seed values into episode sampling and between-seed (training) parts."""
    w = float(np.mean(within))
    if len(values) < 2:
        return VarianceParts(float("nan"), w, float("nan"))
    observed = float(np.var(values, ddof=1))
    return VarianceParts(observed, w, max(observed - w, 0.0))


def hierarchical_bootstrap(arms: Sequence[Arm], tasks: Sequence[str] | np.ndarray, resamples: int, seed: int,
                           level: float = 0.95) -> Interval:
    """Percentile interval of the mean over seeds: resample seeds, then tasks within each seed, then episodes.

    Seeds are matched across arms (the same draw for all); a task brings all of its cells (suites) and is drawn
    for every arm alike. Paired arms (`paired_outcomes`) then draw episodes with replacement within each cell, the
    same episodes for every policy. Otherwise episodes are redrawn per policy from each cell's observed rate
    (binomial), and a `shared` arm (one policy, no seed) has its episodes redrawn once per replicate, the same for
    every seed.
    """
    rng = np.random.default_rng(seed)
    seeds = max(a.successes.shape[0] for a in arms)
    _, cell_task = np.unique(np.asarray(tasks), return_inverse=True)
    n_tasks = int(cell_task.max()) + 1
    membership = np.eye(n_tasks)[cell_task].T  # (T, C): which task each cell belongs to
    pick = rng.integers(0, seeds, size=(resamples, seeds))  # (R, S)
    weights = rng.multinomial(n_tasks, np.full(n_tasks, 1 / n_tasks), size=(resamples, seeds)) @ membership
    paired = paired_outcomes(arms)
    if paired is not None:
        z, n = paired  # (S, C, E), (C,)
        drawn = (weights * n).astype(np.int64)  # (R, S, C): episodes drawn from each cell, all copies together
        counts = rng.multinomial(drawn, ~np.isnan(z[0]) / n[:, None])  # (R, S, C, E)
        total = (counts * np.nan_to_num(z)[pick]).sum(axis=(-2, -1)) / drawn.sum(axis=-1)  # (R, S)
        return _percentile_interval(arms, total, seeds, level)
    weights = weights[:, :, None, :]  # (R, S, 1, C): how many times each cell was drawn
    total = np.zeros((resamples, seeds))
    for arm in arms:
        rate = arm.successes / arm.n  # (S_a, G, C)
        if arm.shared:
            drawn = rng.binomial(arm.n[0], rate[0], size=(resamples, 1, *rate.shape[1:]))  # (R, 1, G, C)
            pooled = (weights * drawn).sum(-1) / (weights * arm.n[0]).sum(-1)  # (R, S, G)
        else:
            n = arm.n[pick] * weights  # (R, S, G, C) episodes of each drawn cell, all copies together
            pooled = rng.binomial(n.astype(np.int64), rate[pick]).sum(-1) / n.sum(-1)
        total += arm.sign * pooled.mean(axis=-1)
    return _percentile_interval(arms, total, seeds, level)


def _percentile_interval(arms: Sequence[Arm], replicates: np.ndarray, seeds: int, level: float) -> Interval:
    """The observed mean over seeds with the percentile interval of the replicates' means (R, S)."""
    tail = (1 - level) / 2
    lo, hi = np.quantile(replicates.mean(axis=1), [tail, 1 - tail])
    return Interval(float(seed_values(arms).mean()), float(lo), float(hi), seeds)


def seed_comparison(arms: Sequence[Arm], tasks: Sequence[str] | np.ndarray, resamples: int, seed: int,
                    level: float = 0.95) -> SeedComparison:
    """Seed-level comparison: t-test on the per-seed differences, hierarchical bootstrap interval."""
    values = seed_values(arms)
    test = seed_t_test(values, level)
    interval = hierarchical_bootstrap(arms, tasks, resamples, seed, level)
    return SeedComparison(int(values.size), test.mean, interval.lo, interval.hi, test.lo, test.hi, test.p_value,
                          tuple(float(v) for v in values))


def minimum_detectable_effect(variance: float, n_seeds: int, alpha: float, power: float) -> float | None:
    """(t_{1-alpha/2, n-1} + t_{power, n-1}) sqrt(variance / n): two-sided paired t-test over seeds.

    `variance` is that of one seed's difference; None when it is undefined (fewer than 2 seeds, no variance).
    """
    if n_seeds < 2 or not variance > 0:
        return None
    dof = n_seeds - 1
    factor = scipy_stats.t.ppf(1 - alpha / 2, dof) + scipy_stats.t.ppf(power, dof)
    return float(factor * math.sqrt(variance / n_seeds))


def seeds_needed(variance: float, target: float, alpha: float, power: float, limit: int = 10_000) -> int | None:
    """The fewest seeds (>= 2) whose MDE is at most `target`; None if undefined or beyond `limit`."""
    if not variance > 0:
        return None
    n = np.arange(2, limit + 1)
    mde = (scipy_stats.t.ppf(1 - alpha / 2, n - 1) + scipy_stats.t.ppf(power, n - 1)) * np.sqrt(variance / n)
    reached = np.flatnonzero(mde <= target)
    return int(n[reached[0]]) if reached.size else None


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order; NaN stays NaN."""
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.size, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = order.size
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])  # (m - i) * p_(i), made monotone
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def verdict(result: Effect, p_adjusted: float, alpha: float, min_effect: float) -> Verdict:
    """A claim that the treatment beats the reference, judged on one comparison.

    supported: significant (Holm-adjusted p < alpha) and positive. contradicted: significant and negative, or
    the interval rules out any gain of `min_effect` or more (upper < min_effect). inconclusive: anything else,
    i.e. the study lacks the power to tell, and always when the test is not estimable (NaN p: one seed, no
    variance).
    """
    if math.isnan(p_adjusted):
        return "inconclusive"
    if p_adjusted < alpha and result.mean_diff > 0:
        return "supported"
    if (p_adjusted < alpha and result.mean_diff < 0) or result.upper < min_effect:
        return "contradicted"
    return "inconclusive"
