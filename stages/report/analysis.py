"""From evaluation episodes to the report's numbers: success cells, seed-level intervals, comparisons, verdicts.

The training seed is the unit of replication: a comparison's p-value is a paired t-test on the per-seed
differences, its interval a hierarchical bootstrap (seeds, then tasks, then episodes; `common.stats`).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from common.cli import StageError
from common.stats import Arm, Interval, SeedComparison, Verdict, hierarchical_bootstrap, holm, seed_comparison, verdict
from stages.report import BASELINE, Params

IMAGE_LATENTS = ("la_align", "la_direct", "la_cond")
DISCRETE_TOKENS = ("la_direct", "la_cond", "la_tok")
STRATEGY_LEGEND = {  # common/vla/strategies, one line each
    "baseline": "no latent; P x K action placeholders (P: finetune.placeholders_per_step; the paper's 5), all fed "
                "to the L1 action head; action loss only",
    "la_align": "image LAM, continuous code vectors; P x K placeholders, the last K to the head; plus 1 - cosine "
                "between a projected middle layer and the mean LAM code vector",
    "la_direct": "image LAM, discrete codes; 4K placeholders pooled to K for the head; plus cross-entropy "
                 "against the LAM code tokens <ACT_i> on all of them",
    "la_cond": "image LAM, discrete codes; 4K + K placeholders, all to the head; cross-entropy on the first 4K, "
               "the last K condition the head",
    "la_tok": "action tokenizer (VQ over action chunks), discrete codes; K placeholders to the head; plus "
              "cross-entropy against the chunk's action tokens <LA_i>",
}
REFERENCE_LEGEND = {
    "expert": "Meta-World's scripted expert (reads the simulator state): the ceiling of the tasks",
    "reference": "a small conv behaviour-cloning policy trained on the same demonstrations: the bar a VLA should "
                 "clear",
}


@dataclasses.dataclass(frozen=True)
class Scope:
    """Which episodes a number covers: some suites and/or some task categories (empty: all)."""

    suites: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()

    def covers(self, suite: str, categories: tuple[str, ...]) -> bool:
        """Whether an episode of this suite and these task categories falls in the scope."""
        return ((not self.suites or suite in self.suites)
                and (not self.categories or any(c in self.categories for c in categories)))

    def describe(self) -> str:
        """The scope in words."""
        parts = ([f"suites {', '.join(self.suites)}"] if self.suites else []) + (
            [f"{', '.join(self.categories)} tasks"] if self.categories else [])
        return "; ".join(parts) or "all episodes"


@dataclasses.dataclass(frozen=True)
class Claim:
    """One of the study's claims, as a comparison of strategy groups within a scope."""

    key: str
    text: str
    treatment: tuple[str, ...]  # averaged per seed
    reference: tuple[str, ...]
    scope: Scope


CLAIMS = (
    Claim("image_latents_long_horizon", "Image-based latent actions help long-horizon tasks",
          IMAGE_LATENTS, (BASELINE,), Scope(categories=("long_horizon",))),
    Claim("image_latents_scene_generalization", "Image-based latent actions help scene-level generalization "
          "(unseen layouts, visual shift)", IMAGE_LATENTS, (BASELINE,),
          Scope(suites=("unseen_layouts", "visual_shift"))),
    Claim("action_latents_precision", "Action-based latent actions help precision / motor-coordination tasks",
          ("la_tok",), (BASELINE,), Scope(categories=("precision",))),
    Claim("discrete_tokens_beat_alignment", "Supervising with discrete latent tokens (la_direct, la_cond, la_tok) "
          "beats continuous alignment (la_align)", DISCRETE_TOKENS, ("la_align",), Scope()),
)
OUT_OF_SCOPE = ("Latent supervision helps when training on mixed heterogeneous data: not tested here (one "
                "simulator, one embodiment, one data source); this report gives no verdict on it.")


@dataclasses.dataclass(frozen=True)
class Cell:
    """Episodes of one policy (strategy and seed; seed None: a reference policy) on one task in one suite."""

    strategy: str
    seed: int | None
    task: str
    suite: str
    categories: tuple[str, ...]
    n: int
    successes: int
    # Each episode's (episode index, simulator seed) and success, in that order: evaluate's plan gives every policy
    # the same episodes, which pairs the policies' outcomes (common.stats.paired_outcomes).
    episodes: tuple[tuple[int, int], ...] = ()
    outcomes: tuple[bool, ...] = ()

    def covers(self, scope: Scope) -> bool:
        """Whether the cell's episodes fall in the scope."""
        return scope.covers(self.suite, self.categories)


@dataclasses.dataclass(frozen=True)
class Contrast:
    """The counts behind one comparison: its arms (seeds matched) and the task of each cell."""

    arms: tuple[Arm, ...]
    tasks: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Comparison:
    """A seed-level comparison with its Holm-adjusted p-value (and, for a claim, the verdict)."""

    key: str
    text: str
    result: SeedComparison | None  # None: not testable (a strategy it needs was not run)
    p_holm: float | None  # NaN: the test is not estimable (one seed, or every seed the same)
    verdict: Verdict | None
    note: str
    contrast: Contrast | None


def policy_name(strategy: str, seed: int | None) -> str:
    """`<strategy>-<seed>` for a trained policy, the bare name for a reference policy."""
    return strategy if seed is None else f"{strategy}-{seed}"


def make_cells(episodes: dict[tuple[str, int | None], list[dict[str, Any]]]) -> list[Cell]:
    """Pool each policy's episodes by (task, suite); every policy must cover the same (task, suite) pairs."""
    cells, coverage = [], {}
    for (strategy, seed), items in sorted(episodes.items(), key=lambda kv: (kv[0][0], -1 if kv[0][1] is None
                                                                            else kv[0][1])):
        groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for episode in items:
            groups[(episode["task"], episode["suite"])].append(episode)
        coverage[policy_name(strategy, seed)] = set(groups)
        for (task, suite), group in sorted(groups.items()):
            keys = [episode_key(e) for e in group]
            matched = None not in keys and len(set(keys)) == len(keys)  # else counts only: nothing to pair by
            if matched:
                keys, group = map(list, zip(*sorted(zip(keys, group), key=lambda pair: pair[0])))
            cells.append(Cell(strategy, seed, task, suite, tuple(group[0]["categories"]), len(group),
                              sum(bool(e["success"]) for e in group), tuple(keys) if matched else (),
                              tuple(bool(e["success"]) for e in group)))
    reference = next(iter(coverage.values()))
    for name, keys in coverage.items():
        if keys != reference:
            raise StageError(f"evaluation {name} covers other (task, suite) pairs than the rest "
                             f"(differs in {sorted(keys ^ reference)[:5]}); evaluate every policy on the same suites")
    plans = defaultdict(set)
    for cell in cells:
        plans[(cell.task, cell.suite)].add(cell.episodes)
    # Pairing needs the same episodes for every policy; where they differ, the cell's counts stand alone.
    return [c if len(plans[(c.task, c.suite)]) == 1 else dataclasses.replace(c, episodes=(), outcomes=())
            for c in cells]


def arm(cells: list[Cell], strategies: Sequence[str], seeds: Sequence[int | None], scope: Scope,
        sign: float = 1.0, shared: bool = False) -> tuple[Arm, tuple[str, ...]]:
    """Counts (seed, strategy, cell) of a group of strategies within the scope, and the task of each cell."""
    table = {(c.strategy, c.seed, c.task, c.suite): c for c in cells if c.covers(scope)}
    keys = sorted({(c.task, c.suite) for c in table.values()})
    chosen = [[[table[(s, seed, *k)] for k in keys] for s in strategies] for seed in seeds]
    successes = np.array([[[c.successes for c in row] for row in group] for group in chosen])  # (S, G, C)
    n = np.array([[[c.n for c in row] for row in group] for group in chosen])
    return Arm(successes, n, sign, shared, episode_outcomes(chosen)), tuple(task for task, _ in keys)


def episode_key(episode: dict[str, Any]) -> tuple[int, int] | None:
    """What makes two policies' episodes the same episode: the plan's index and the simulator seed (None: absent)."""
    index, seed = episode.get("episode"), episode.get("seed")
    return (index, seed) if isinstance(index, int) and isinstance(seed, int) else None


def episode_outcomes(chosen: list[list[list[Cell]]]) -> np.ndarray | None:
    """(S, G, C, E) successes (1/0, NaN past a cell's n) when every cell has its episodes matched across all the
    policies (`make_cells`: the pairing the report's variance and bootstrap use); None otherwise."""
    cells = [c for group in chosen for row in group for c in row]
    if not cells or any(not c.episodes for c in cells):
        return None
    width = max(c.n for c in cells)
    out = np.full((len(chosen), len(chosen[0]), len(chosen[0][0]), width), np.nan)
    for s, group in enumerate(chosen):
        for g, row in enumerate(group):
            for k, cell in enumerate(row):
                out[s, g, k, : cell.n] = cell.outcomes
    return out


def in_scope(cells: list[Cell], scope: Scope) -> bool:
    """Whether any episode falls in the scope."""
    return any(c.covers(scope) for c in cells)


def success_interval(cells: list[Cell], strategy: str, seeds: Sequence[int | None], scope: Scope,
                     params: Params) -> Interval:
    """Mean over seeds of the pooled success rate within the scope, with its hierarchical bootstrap interval."""
    if not in_scope(cells, scope):
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    counts, tasks = arm(cells, (strategy,), seeds, scope)
    return hierarchical_bootstrap((counts,), tasks, params.bootstrap, params.seed)


def reference_gap(cells: list[Cell], reference: str, seeds: Sequence[int], scope: Scope, params: Params) -> Interval:
    """Baseline (mean over seeds) minus a reference policy (one policy, no seed) within the scope."""
    baseline, tasks = arm(cells, (BASELINE,), seeds, scope)
    other, _ = arm(cells, (reference,), (None,), scope, sign=-1.0, shared=True)
    return hierarchical_bootstrap((baseline, other), tasks, params.bootstrap, params.seed + 1)


def compare(cells: list[Cell], tests: list[Claim], available: set[str], params: Params,
            judge: bool) -> list[Comparison]:
    """Seed-level tests for a family of comparisons, Holm-adjusted together; verdicts when `judge` (claims)."""
    contrasts: list[Contrast | None] = []
    results: list[SeedComparison | None] = []
    for number, test in enumerate(tests):
        if set(test.treatment + test.reference) - available or not in_scope(cells, test.scope):
            contrasts.append(None)
            results.append(None)
            continue
        treated, tasks = arm(cells, test.treatment, params.seeds, test.scope)
        reference, _ = arm(cells, test.reference, params.seeds, test.scope, sign=-1.0)
        contrasts.append(Contrast((treated, reference), tasks))
        results.append(seed_comparison((treated, reference), tasks, params.bootstrap, params.seed + 7 * number))
    adjusted = iter(holm([r.p_value for r in results if r is not None]))
    out = []
    for test, result, contrast in zip(tests, results, contrasts):
        if result is None:
            missing = sorted(set(test.treatment + test.reference) - available)
            note = f"not tested: {missing} not in study.items" if missing else "not tested: no episodes in scope"
            out.append(Comparison(test.key, test.text, None, None, None, note, None))
            continue
        p = float(next(adjusted))
        judged = verdict(result, p, params.alpha, params.min_effect) if judge else None
        out.append(Comparison(test.key, test.text, result, p, judged, untestable_note(result), contrast))
    return out


def untestable_note(result: SeedComparison) -> str:
    """Why a seed-level test has no p-value ('' when it has one)."""
    if result.n_seeds < 2:
        return "1 seed: no seed-level test (training variance not estimable; run at least 2 seeds)"
    if np.isnan(result.p_value):
        return f"all {result.n_seeds} seeds give the same difference: test and t interval not estimable"
    return ""


def strategy_tests(strategies: list[str]) -> list[Claim]:
    """Each strategy against the baseline, on every episode."""
    return [Claim(s, f"{s} vs {BASELINE}", (s,), (BASELINE,), Scope()) for s in strategies if s != BASELINE]
