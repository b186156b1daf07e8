"""Seed-level inference and power on synthetic studies whose seed variance is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.stats import (
    Arm,
    hierarchical_bootstrap,
    minimum_detectable_effect,
    paired_comparison,
    sampling_variance,
    seed_comparison,
    seed_t_test,
    seed_values,
    seeds_needed,
    variance_parts,
)

TASKS = np.repeat([f"task-{i}" for i in range(6)], 3)  # 6 tasks x 3 suites = 18 cells


def study(rng: np.random.Generator, reference_rate: np.ndarray, seed_shift: np.ndarray,
          episodes: np.ndarray) -> tuple[Arm, Arm]:
    """Binomial episodes: the treatment's rate is the reference's + that seed's shift, in every cell."""
    n = np.broadcast_to(episodes, (seed_shift.size, 1, TASKS.size))  # (S, 1, C)
    ref = np.broadcast_to(reference_rate, n.shape)
    treated = np.clip(ref + seed_shift[:, None, None], 0, 1)
    return Arm(rng.binomial(n, treated), n.copy()), Arm(rng.binomial(n, ref), n.copy(), sign=-1.0)


def test_t_interval_and_mde_match_hand_computed_values() -> None:
    # The numbers: la_tok - baseline per seed +8.3, +16.7, +25.0 points -> +16.7 +- 20.7 (t, 2 dof).
    test = seed_t_test([1 / 12, 2 / 12, 3 / 12])
    assert test.mean == pytest.approx(1 / 6) and test.sd == pytest.approx(1 / 12)
    assert test.hi - test.mean == pytest.approx(4.302653 * (1 / 12) / math.sqrt(3), rel=1e-5)  # t(0.975, 2)
    assert test.hi - test.mean == pytest.approx(0.2070, abs=5e-4)
    assert test.p_value == pytest.approx(0.0742, abs=5e-4)  # t = 3.464 on 2 dof
    # MDE = (t(0.975, 2) + t(0.8, 2)) * sqrt(0.0075 / 3) = (4.302653 + 1.060660) * 0.05.
    assert minimum_detectable_effect(0.0075, 3, alpha=0.05, power=0.8) == pytest.approx(0.268166, rel=1e-5)
    # Holm's strictest level for 4 comparisons: t(1 - 0.0125 / 2, 2) = 8.860, so about 1.8x the single-test MDE.
    assert minimum_detectable_effect(0.0075, 3, alpha=0.0125, power=0.8) == pytest.approx(
        (8.860333 + 1.060660) * 0.05, rel=1e-4)


def test_mde_and_seeds_needed_are_undefined_without_two_seeds_or_variance() -> None:
    assert minimum_detectable_effect(0.01, 1, 0.05, 0.8) is None
    assert minimum_detectable_effect(0.0, 3, 0.05, 0.8) is None
    assert seeds_needed(0.0, 0.1, 0.05, 0.8) is None
    assert seeds_needed(1e6, 0.1, 0.05, 0.8, limit=50) is None  # beyond the limit: not a number pretending
    test = seed_t_test([0.2])
    assert test.n == 1 and math.isnan(test.p_value) and math.isnan(test.lo)
    flat = seed_t_test([0.1, 0.1, 0.1])  # every seed the same: no estimate of the training variance
    assert flat.sd == 0.0 and math.isnan(flat.p_value)


def test_seeds_needed_is_the_first_design_that_reaches_the_target() -> None:
    variance, alpha = 0.01, 0.0125
    n = seeds_needed(variance, 0.10, alpha, 0.8)
    assert n is not None and n > 3
    assert minimum_detectable_effect(variance, n, alpha, 0.8) <= 0.10 < minimum_detectable_effect(  # type: ignore
        variance, n - 1, alpha, 0.8)


def test_the_mde_is_detected_with_about_80_percent_power() -> None:
    from scipy import stats

    rng = np.random.default_rng(0)
    sd, n, alpha = 0.1, 6, 0.05
    effect = minimum_detectable_effect(sd ** 2, n, alpha, 0.8)
    assert effect is not None
    diffs = rng.normal(effect, sd, size=(4000, n))
    t = diffs.mean(1) / (diffs.std(1, ddof=1) / math.sqrt(n))
    power = np.mean(2 * stats.t.sf(np.abs(t), n - 1) < alpha)
    assert 0.75 <= power <= 0.88


def test_sampling_variance_is_the_binomial_variance_of_the_pooled_rate() -> None:
    # One seed, one strategy, two cells of 4 episodes with 2 and 4 successes: unbiased per-cell p(1-p) n/(n-1).
    counts = Arm(np.array([[[2, 4]]]), np.array([[[4, 4]]]))
    per_cell = [0.25 * 4 / 3, 0.0]
    assert sampling_variance([counts]) == pytest.approx([sum(4 * v for v in per_cell) / 8 ** 2])
    # A difference adds both arms' variances; a group of G strategies divides by G.
    group = Arm(np.array([[[2, 4], [2, 4]]]), np.array([[[4, 4], [4, 4]]]), sign=-1.0)
    assert sampling_variance([counts, group]) == pytest.approx(sampling_variance([counts]) * 1.5)


def test_variance_parts_recover_the_training_and_episode_variance() -> None:
    rng = np.random.default_rng(1)
    shifts = rng.normal(0.15, 0.10, size=400)  # training: between-seed SD of the difference 10 points
    arms = study(rng, np.full(TASKS.size, 0.4), shifts, np.full(TASKS.size, 8))
    parts = variance_parts(seed_values(arms), sampling_variance(arms))
    expected_within = (0.4 * 0.6 + 0.55 * 0.45 - 0.10 ** 2) / (8 * 18)  # p(1 - p) / episodes, both arms
    assert parts.within == pytest.approx(expected_within, rel=0.25)
    assert parts.between == pytest.approx(0.10 ** 2, rel=0.25)
    assert parts.observed == pytest.approx(parts.between + parts.within, rel=1e-9)
    one = variance_parts(seed_values(arms)[:1], sampling_variance(arms)[:1])
    assert math.isnan(one.between) and one.within > 0


def test_large_seed_variance_fools_the_cell_level_test_but_not_the_seed_level_one() -> None:
    rng = np.random.default_rng(2)
    shifts = np.array([0.35, -0.10, 0.20])  # each seed's model is better or worse everywhere: mean +15 points
    treated, reference = study(rng, np.full(TASKS.size, 0.4), shifts, np.full(TASKS.size, 10))
    # Today's test: 54 (seed, task, suite) cells as independent pairs.
    cells = paired_comparison((treated.successes / treated.n).ravel(), (reference.successes / reference.n).ravel(),
                              resamples=1000, permutations=2000, seed=0)
    assert cells.n == 54 and cells.p_value < 0.01 and cells.lo > 0
    seeds = seed_comparison([treated, reference], TASKS, resamples=500, seed=0)
    assert seeds.n_seeds == 3 and seeds.p_value > 0.05 and seeds.t_lo < 0 < seeds.t_hi
    assert seeds.mean_diff == pytest.approx(cells.mean_diff, abs=1e-9)  # the same effect, honest uncertainty


def test_a_large_effect_with_small_seed_variance_is_significant_at_the_seed_level() -> None:
    rng = np.random.default_rng(3)
    shifts = 0.40 + rng.normal(0, 0.02, size=5)
    arms = study(rng, np.linspace(0.2, 0.5, TASKS.size), shifts, np.full(TASKS.size, 10))
    result = seed_comparison(arms, TASKS, resamples=500, seed=0)
    assert result.p_value < 0.001 and 0.30 < result.lo < result.mean_diff < result.hi < 0.50
    assert 0.30 < result.t_lo < result.t_hi < 0.50


def test_hierarchical_bootstrap_covers_a_known_difference_about_95_percent_of_the_time() -> None:
    # 5 seeds whose training moves the difference by SD 10 points, 10 episodes per cell: the seed level dominates.
    # (Where episode noise dominates the interval is conservative: resampling counts that noise at two levels.)
    rng = np.random.default_rng(4)
    hits, studies = 0, 200
    for i in range(studies):
        reference_rate = np.repeat(rng.uniform(0.3, 0.5, size=6), 3)
        arms = study(rng, reference_rate, 0.15 + rng.normal(0, 0.10, size=5), np.full(TASKS.size, 10))
        interval = hierarchical_bootstrap(arms, TASKS, resamples=300, seed=i)
        hits += interval.lo <= 0.15 <= interval.hi
    assert 0.88 <= hits / studies <= 0.99


def test_a_shared_reference_arm_is_one_policy_against_every_seed() -> None:
    rng = np.random.default_rng(5)
    n = np.full((3, 1, TASKS.size), 10)
    strategy = Arm(rng.binomial(n, 0.5), n)
    reference = Arm(np.full((1, 1, TASKS.size), 2), np.full((1, 1, TASKS.size), 10), sign=-1.0, shared=True)
    values = seed_values([strategy, reference])
    assert values.shape == (3,) and values == pytest.approx(strategy.successes.sum((1, 2)) / 180 - 0.2)
    gap = hierarchical_bootstrap([strategy, reference], TASKS, resamples=300, seed=0)
    assert gap.n == 3 and gap.mean == pytest.approx(values.mean()) and gap.lo < gap.mean < gap.hi
    certain = Arm(np.zeros((1, 1, TASKS.size), int), np.full((1, 1, TASKS.size), 10))
    zero = hierarchical_bootstrap([certain], TASKS, resamples=200, seed=0)  # every episode failed
    assert (zero.mean, zero.lo, zero.hi) == (0.0, 0.0, 0.0)
