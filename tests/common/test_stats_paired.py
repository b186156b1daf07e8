"""Paired episodes: every policy runs the same episodes, so a difference's episode sampling is that of the
per-episode differences (common.stats.paired_outcomes), in the variance the power section splits and in the
hierarchical bootstrap."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from common.stats import Arm, hierarchical_bootstrap, paired_outcomes, sampling_variance, seed_values, variance_parts
from stages.report.analysis import Scope, arm, make_cells

TASKS = np.repeat([f"task-{i}" for i in range(6)], 3)  # 6 tasks x 3 suites = 18 cells
EPISODES = 10


def arms_from(outcomes_a: np.ndarray, outcomes_b: np.ndarray) -> tuple[Arm, Arm]:
    """Treatment minus reference from per-episode outcomes (S, C, E), one strategy per arm, with counts."""
    def one(outcomes: np.ndarray, sign: float) -> Arm:
        y = outcomes[:, None].astype(np.float64)  # (S, 1, C, E)
        return Arm(y.sum(-1).astype(np.int64), np.full(y.shape[:-1], y.shape[-1]), sign, outcomes=y)
    return one(outcomes_a, 1.0), one(outcomes_b, -1.0)


def unpaired(arms: tuple[Arm, ...]) -> tuple[Arm, ...]:
    """The same counts without episode identity."""
    return tuple(dataclasses.replace(a, outcomes=None) for a in arms)


def difficulty_study(rng: np.random.Generator, seeds: int, rate_a: float, rate_b: float) -> tuple[Arm, Arm]:
    """Each episode has a difficulty u shared by both policies: a policy succeeds when u < its rate (so the one
    with the higher rate solves every episode the other solves)."""
    u = rng.random((seeds, TASKS.size, EPISODES))
    return arms_from(u < rate_a, u < rate_b)


def test_one_arm_paired_is_the_binomial_variance() -> None:
    rng = np.random.default_rng(0)
    a, _ = difficulty_study(rng, 4, 0.6, 0.4)
    assert sampling_variance([a]) == pytest.approx(sampling_variance(unpaired((a,))), rel=1e-12)


def test_shared_difficulty_leaves_only_the_episodes_the_policies_disagree_on() -> None:
    rng = np.random.default_rng(1)
    arms = difficulty_study(rng, 200, 0.6, 0.4)
    paired, independent = sampling_variance(arms).mean(), sampling_variance(unpaired(arms)).mean()
    # Per episode the difference is 1 with probability 0.2 (0.4 <= u < 0.6), else 0: variance 0.16 / 180 episodes,
    # where independent draws would give (0.24 + 0.24) / 180.
    assert paired == pytest.approx(0.2 * 0.8 / 180, rel=0.1)
    assert independent == pytest.approx(0.48 / 180, rel=0.1)
    # The observed spread of the per-seed differences (no training variance here) is the paired one.
    observed = float(np.var(seed_values(arms), ddof=1))
    assert observed == pytest.approx(paired, rel=0.25)
    parts = variance_parts(seed_values(unpaired(arms)), sampling_variance(unpaired(arms)))
    assert parts.within > 2 * observed  # unpaired: the episode part exceeds what the seeds show


def test_independent_outcomes_give_the_unpaired_variance() -> None:
    rng = np.random.default_rng(2)
    arms = arms_from(rng.random((200, TASKS.size, EPISODES)) < 0.6, rng.random((200, TASKS.size, EPISODES)) < 0.4)
    assert sampling_variance(arms).mean() == pytest.approx(sampling_variance(unpaired(arms)).mean(), rel=0.05)


def test_paired_bootstrap_resamples_the_same_episodes_for_both_sides() -> None:
    rng = np.random.default_rng(3)
    same = rng.random((3, TASKS.size, EPISODES)) < 0.5
    identical = arms_from(same, same)
    interval = hierarchical_bootstrap(identical, TASKS, resamples=500, seed=0)
    assert interval.mean == 0 and interval.lo == 0 and interval.hi == 0  # no episode can tell them apart
    wide = hierarchical_bootstrap(unpaired(identical), TASKS, resamples=500, seed=0)
    assert wide.lo < -0.02 and wide.hi > 0.02
    arms = difficulty_study(rng, 3, 0.6, 0.4)
    narrow = hierarchical_bootstrap(arms, TASKS, resamples=1000, seed=0)
    broad = hierarchical_bootstrap(unpaired(arms), TASKS, resamples=1000, seed=0)
    assert narrow.mean == pytest.approx(broad.mean) and narrow.lo <= narrow.mean <= narrow.hi
    assert narrow.hi - narrow.lo < 0.8 * (broad.hi - broad.lo)


def test_paired_bootstrap_covers_the_true_difference() -> None:
    rng = np.random.default_rng(4)
    covered = 0
    for trial in range(60):  # no training variance: the truth is 20 points
        arms = difficulty_study(rng, 3, 0.6, 0.4)
        interval = hierarchical_bootstrap(arms, TASKS, resamples=300, seed=trial)
        covered += interval.lo <= 0.2 <= interval.hi
    assert covered >= 51  # ~95% nominal; 51/60 = 85% allows for a coarse bootstrap of 540 episodes


def test_arms_without_matching_episodes_are_not_paired() -> None:
    rng = np.random.default_rng(5)
    a, b = difficulty_study(rng, 3, 0.6, 0.4)
    assert paired_outcomes((a, b)) is not None
    assert paired_outcomes((a, dataclasses.replace(b, shared=True))) is None  # one policy for every seed
    fewer = b.outcomes.copy()  # type: ignore[union-attr]
    fewer[..., -1] = np.nan  # one episode fewer per cell on one side
    assert paired_outcomes((a, dataclasses.replace(b, outcomes=fewer))) is None


def episode(task: str, index: int, seed: int, success: bool) -> dict[str, object]:
    """One episodes.jsonl line with the fields the report reads."""
    return {"task": task, "suite": "seen", "categories": ["short"], "episode": index, "seed": seed,
            "success": success}


def test_report_cells_pair_episodes_by_plan_index_and_seed_in_any_file_order() -> None:
    plan = [(0, 10, True), (1, 11, False), (2, 12, True)]
    baseline = [episode("t", i, s, ok) for i, s, ok in plan]
    other = [episode("t", i, s, not ok) for i, s, ok in reversed(plan)]  # written in another order
    cells = make_cells({("baseline", 0): baseline, ("la_tok", 0): other})
    treated, _ = arm(cells, ("la_tok",), (0,), Scope())
    reference, _ = arm(cells, ("baseline",), (0,), Scope(), sign=-1.0)
    np.testing.assert_array_equal(treated.outcomes[0, 0, 0], [0, 1, 0])  # type: ignore[index]
    np.testing.assert_array_equal(reference.outcomes[0, 0, 0], [1, 0, 1])  # type: ignore[index]
    assert paired_outcomes((treated, reference)) is not None
    # Another simulator seed for one episode: not the same episodes, so counts only.
    moved = [episode("t", i, s + (i == 1), not ok) for i, s, ok in plan]
    cells = make_cells({("baseline", 0): baseline, ("la_tok", 0): moved})
    treated, _ = arm(cells, ("la_tok",), (0,), Scope())
    assert treated.outcomes is None and treated.successes.tolist() == [[[1]]]
    # Episodes without plan keys (older files): counts only.
    bare = [{k: v for k, v in e.items() if k != "seed"} for e in baseline]
    cells = make_cells({("baseline", 0): bare, ("la_tok", 0): other})
    assert arm(cells, ("baseline",), (0,), Scope())[0].outcomes is None
