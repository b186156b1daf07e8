"""The report's statistics on synthetic data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from common.stats import (
    PairedResult,
    SeedComparison,
    bootstrap_mean,
    holm,
    paired_comparison,
    sign_flip_p_value,
    verdict,
)


def test_bootstrap_interval_of_a_constant_is_that_constant() -> None:
    interval = bootstrap_mean([0.4, 0.4, 0.4], resamples=200, seed=0)
    assert (interval.mean, interval.lo, interval.hi, interval.n) == pytest.approx((0.4, 0.4, 0.4, 3))


def test_bootstrap_interval_matches_the_normal_theory_width() -> None:
    x = np.random.default_rng(1).normal(0.5, 0.1, size=2000)
    interval = bootstrap_mean(x, resamples=2000, seed=0)
    assert interval.lo < 0.5 < interval.hi
    assert interval.hi - interval.lo == pytest.approx(2 * 1.96 * 0.1 / np.sqrt(2000), rel=0.15)


def test_bootstrap_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(2)
    hits = 0
    for i in range(300):
        interval = bootstrap_mean(rng.normal(0.3, 0.1, size=30), 500, seed=i)
        hits += interval.lo < 0.3 < interval.hi
    assert 0.88 <= hits / 300 <= 0.99


def test_a_true_30_point_effect_is_detected() -> None:
    rng = np.random.default_rng(3)
    baseline = rng.uniform(0.2, 0.6, size=18)  # 3 seeds x 6 tasks
    treated = np.clip(baseline + 0.30 + rng.normal(0, 0.1, size=18), 0, 1)
    result = paired_comparison(treated, baseline, resamples=2000, permutations=5000, seed=0)
    assert result.n == 18 and result.p_value < 0.001
    assert abs(result.mean_diff - 0.30) < 3 * 0.1 / np.sqrt(18)  # within 3 standard errors of the truth
    assert 0.15 < result.lo < result.mean_diff < result.hi < 0.45
    assert verdict(result, result.p_value, alpha=0.05, min_effect=0.05) == "supported"


def test_a_null_effect_is_rejected_at_about_the_nominal_rate() -> None:
    rng = np.random.default_rng(4)
    p_values = []
    for i in range(300):
        baseline = rng.uniform(0.2, 0.8, size=18)
        treated = baseline + rng.normal(0, 0.1, size=18)  # no true difference
        p_values.append(paired_comparison(treated, baseline, resamples=200, permutations=1000, seed=i).p_value)
    rate = np.mean(np.array(p_values) < 0.05)
    assert 0.02 <= rate <= 0.09


def test_exact_sign_flip_p_value_on_a_tiny_sample() -> None:
    # 3 positive differences: only the all-plus and all-minus patterns are as extreme: p = 2 / 8.
    assert sign_flip_p_value(np.array([0.1, 0.1, 0.1]), permutations=0, seed=0) == pytest.approx(0.25)
    assert sign_flip_p_value(np.zeros(4), permutations=0, seed=0) == 1.0


def test_holm_adjusts_as_expected() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone: 0.06 for the last.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.04]) == pytest.approx([0.04])
    # Holm turns a raw "significant" 0.03 among four tests into a non-significant one.
    assert holm([0.03, 0.2, 0.5, 0.9])[0] > 0.05
    # A test that is not estimable (NaN) stays NaN and is not counted in the family.
    adjusted = holm([0.01, float("nan"), 0.04])
    assert np.isnan(adjusted[1]) and adjusted[[0, 2]] == pytest.approx([0.02, 0.04])
    assert holm([]).size == 0


def test_verdict_rules() -> None:
    up, down = PairedResult(18, 0.2, 0.1, 0.3, 0.001), PairedResult(18, -0.2, -0.3, -0.1, 0.001)
    flat = PairedResult(18, 0.0, -0.02, 0.03, 0.8)  # tight around 0: no gain of 5 points
    wide = PairedResult(18, 0.05, -0.1, 0.2, 0.4)  # could be either
    assert verdict(up, 0.01, 0.05, 0.05) == "supported"
    assert verdict(up, 0.2, 0.05, 0.05) == "inconclusive"  # the same effect, not significant after Holm
    assert verdict(down, 0.01, 0.05, 0.05) == "contradicted"
    assert verdict(flat, 0.8, 0.05, 0.05) == "contradicted"
    assert verdict(wide, 0.4, 0.05, 0.05) == "inconclusive"


def test_seed_level_verdicts_read_the_wider_interval_and_never_judge_an_untestable_claim() -> None:
    # The bootstrap interval rules out a 5-point gain, the t interval over 3 seeds does not: not contradicted.
    narrow_bootstrap = SeedComparison(3, -0.02, -0.06, 0.03, -0.20, 0.16, 0.7, (-0.1, 0.0, 0.04))
    assert narrow_bootstrap.upper == 0.16 and verdict(narrow_bootstrap, 0.7, 0.05, 0.05) == "inconclusive"
    both = SeedComparison(3, -0.02, -0.06, 0.03, -0.05, 0.01, 0.3, (-0.03, -0.02, -0.01))
    assert verdict(both, 0.3, 0.05, 0.05) == "contradicted"
    one_seed = SeedComparison(1, -0.3, -0.4, -0.2, float("nan"), float("nan"), float("nan"), (-0.3,))
    assert one_seed.upper == -0.2 and verdict(one_seed, float("nan"), 0.05, 0.05) == "inconclusive"


def test_bad_samples_are_rejected() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_mean([], 10, 0)
    with pytest.raises(ValueError, match="equal-length"):
        paired_comparison([0.1, 0.2], [0.1], 10, 10, 0)
