"""From evaluation episodes to the report's numbers: success cells, intervals, comparisons, claim verdicts."""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from common.cli import StageError
from common.stats import Interval, PairedResult, Verdict, bootstrap_mean, holm, paired_comparison, verdict
from stages.report import BASELINE, Params

IMAGE_LATENTS = ("la_align", "la_direct", "la_cond")
DISCRETE_TOKENS = ("la_direct", "la_cond", "la_tok")
_EPISODE_FIELDS = {"task": str, "suite": str, "categories": list, "success": bool}


@dataclasses.dataclass(frozen=True)
class Scope:
    """Which episodes a number covers: some suites and/or some task categories (empty: all)."""

    suites: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()

    def covers(self, suite: str, categories: tuple[str, ...]) -> bool:
        """Whether an episode of this suite and these task categories falls in the scope."""
        return ((not self.suites or suite in self.suites)
                and (not self.categories or any(c in self.categories for c in categories)))


@dataclasses.dataclass(frozen=True)
class Claim:
    """One of the study's claims, as a paired comparison of strategy groups within a scope."""

    key: str
    text: str
    treatment: tuple[str, ...]  # averaged per pair
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
    """Episodes of one trained policy (strategy, seed) on one task in one suite."""

    strategy: str
    seed: int
    task: str
    suite: str
    categories: tuple[str, ...]
    n: int
    successes: int

    def covers(self, scope: Scope) -> bool:
        """Whether the cell's episodes fall in the scope."""
        return scope.covers(self.suite, self.categories)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """A paired comparison with its Holm-adjusted p-value (and, for a claim, the verdict)."""

    key: str
    text: str
    result: PairedResult | None  # None: not testable (a strategy it needs was not run)
    p_holm: float | None
    verdict: Verdict | None
    note: str


def read_episodes(path: Path) -> list[dict[str, Any]]:
    """evaluate's episodes.jsonl, each line checked for the fields the report uses."""
    if not path.is_file():
        raise StageError(f"{path} is missing; run `dvc repro evaluate@{path.parent.name}`")
    episodes = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            episode = json.loads(line)
        except json.JSONDecodeError as exc:
            raise StageError(f"{path}:{number}: not JSON ({exc}); rerun `dvc repro evaluate@{path.parent.name}`")
        for field, kind in _EPISODE_FIELDS.items():
            if not isinstance(episode.get(field), kind):
                raise StageError(f"{path}:{number}: field {field!r} = {episode.get(field)!r} is not a "
                                 f"{kind.__name__}; the file does not follow evaluate's contract")
        episodes.append(episode)
    if not episodes:
        raise StageError(f"{path} has no episodes; rerun `dvc repro evaluate@{path.parent.name}`")
    return episodes


def make_cells(episodes: dict[tuple[str, int], list[dict[str, Any]]]) -> list[Cell]:
    """Pool each policy's episodes by (task, suite); every policy must cover the same (task, suite) pairs."""
    cells, coverage = [], {}
    for (strategy, seed), items in sorted(episodes.items()):
        groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for episode in items:
            groups[(episode["task"], episode["suite"])].append(episode)
        coverage[(strategy, seed)] = set(groups)
        for (task, suite), group in sorted(groups.items()):
            cells.append(Cell(strategy, seed, task, suite, tuple(group[0]["categories"]), len(group),
                              sum(bool(e["success"]) for e in group)))
    reference = next(iter(coverage.values()))
    for (strategy, seed), keys in coverage.items():
        if keys != reference:
            raise StageError(f"evaluation {strategy}-{seed} covers other (task, suite) pairs than the rest "
                             f"(differs in {sorted(keys ^ reference)[:5]}); evaluate every policy on the same suites")
    return cells


def success_interval(cells: list[Cell], strategy: str, seeds: list[int], scope: Scope, params: Params) -> Interval:
    """Mean over seeds of the pooled success rate within the scope, with a bootstrap interval over seeds."""
    rates = []
    for seed in seeds:
        chosen = [c for c in cells if c.strategy == strategy and c.seed == seed and c.covers(scope)]
        if not chosen:
            return Interval(float("nan"), float("nan"), float("nan"), 0)
        rates.append(sum(c.successes for c in chosen) / sum(c.n for c in chosen))
    return bootstrap_mean(rates, params.bootstrap, params.seed)


def paired_rates(cells: list[Cell], treatment: tuple[str, ...], reference: tuple[str, ...],
                 scope: Scope) -> tuple[np.ndarray, np.ndarray]:
    """Per (seed, task, suite) in the scope: mean success of the treatment group and of the reference group."""
    rate: dict[tuple[str, int, str, str], float] = {(c.strategy, c.seed, c.task, c.suite): c.successes / c.n
                                                    for c in cells if c.covers(scope)}
    keys = sorted({k[1:] for k in rate})
    t = np.array([np.mean([rate[(s, *k)] for s in treatment]) for k in keys])
    r = np.array([np.mean([rate[(s, *k)] for s in reference]) for k in keys])
    return t, r


def compare(cells: list[Cell], tests: list[Claim], available: set[str], params: Params,
            judge: bool) -> list[Comparison]:
    """Paired tests for a family of comparisons, Holm-adjusted together; verdicts when `judge` (claims)."""
    results: list[PairedResult | None] = []
    for number, test in enumerate(tests):
        missing = sorted(set(test.treatment + test.reference) - available)
        t, r = paired_rates(cells, test.treatment, test.reference, test.scope) if not missing else ([], [])
        results.append(paired_comparison(t, r, params.bootstrap, params.permutations, params.seed + 7 * number)
                       if len(t) else None)
    tested = [r.p_value for r in results if r is not None]
    adjusted = iter(holm(tested)) if tested else iter(())
    out = []
    for test, result in zip(tests, results):
        if result is None:
            missing = sorted(set(test.treatment + test.reference) - available)
            note = f"not tested: {missing} not in report.strategies" if missing else "not tested: no episodes in scope"
            out.append(Comparison(test.key, test.text, None, None, None, note))
            continue
        p = float(next(adjusted))
        judged = verdict(result, p, params.alpha, params.min_effect) if judge else None
        out.append(Comparison(test.key, test.text, result, p, judged, f"{result.n} pairs (seed, task, suite)"))
    return out


def strategy_tests(strategies: list[str]) -> list[Claim]:
    """Each strategy against the baseline, on every episode."""
    return [Claim(s, f"{s} vs {BASELINE}", (s,), (BASELINE,), Scope()) for s in strategies if s != BASELINE]
