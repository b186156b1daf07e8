"""Run the `report` stage: `python -m stages.report [--params params.yaml]`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_dir, write_json
from common.cli import run_stage
from common.config import to_dict
from common.stats import Interval
from common.tracking import StageRun, TrackingParams
from stages.report import (
    BASELINE,
    FINETUNE_CURVES,
    FINETUNE_METRICS,
    LAM_METRICS,
    METRICS,
    REPORT_DIR,
    REPORT_FILE,
    STAGE,
    TOKENIZER_METRICS,
    Params,
    reference_stage,
    run_name,
)
from stages.report.analysis import (
    CLAIMS,
    Cell,
    Comparison,
    Scope,
    compare,
    make_cells,
    reference_gap,
    strategy_tests,
    success_interval,
)
from stages.report.figures import Table, bar_chart, curve_chart
from stages.report.headline import Study
from stages.report.inputs import check_inputs, read_curve, read_evaluation, read_json, shared_scalars
from stages.report.power import Power, power_of, power_summary
from stages.report.render import markdown

log = logging.getLogger(__name__)


def success_table(cells: list[Cell], params: Params, columns: dict[str, Scope]) -> Table:
    """Policy x column: mean over seeds with its interval; reference policies first, then the strategies."""
    rows: Table = {r: {name: success_interval(cells, r, (None,), scope, params) for name, scope in columns.items()}
                   for r in params.references}
    return rows | {s: {name: success_interval(cells, s, params.seeds, scope, params) for name, scope in columns.items()}
                   for s in params.strategies}


def finetune_means(root: Path, params: Params) -> dict[str, dict[str, float]]:
    """Per strategy, the mean over seeds of every scalar the finetune metrics of all its seeds share."""
    rows = {s: [read_json(root / FINETUNE_METRICS / f"{run_name(s, seed)}.json") for seed in params.seeds]
            for s in params.strategies}
    return {s: {k: float(np.mean([row[k] for row in seeds])) for k in shared_scalars(seeds)}
            for s, seeds in rows.items()}


def summary(by_suite: Table, versus: list[Comparison], claims: list[Comparison], powers: dict[str, list[Power]],
            gaps: dict[str, dict[str, Interval]], params: Params) -> dict[str, Any]:
    """metrics/report.json: success over all episodes, comparisons, verdicts, power, references and gaps."""
    def result(c: Comparison) -> dict[str, Any]:
        if c.result is None:
            return {"tested": False, "note": c.note}
        r = c.result
        return {"tested": True, "diff": r.mean_diff, "ci95": [r.lo, r.hi], "ci95_t": _nulls([r.t_lo, r.t_hi]),
                "per_seed": list(r.per_seed), "p": _null(r.p_value), "p_holm": _null(c.p_holm),
                "test": "paired t-test over seeds", "interval": "hierarchical bootstrap (seeds, tasks, episodes)",
                **({"verdict": c.verdict} if c.verdict else {}), **({"note": c.note} if c.note else {})}

    def interval(i: Interval) -> dict[str, Any]:
        return {"mean": _null(i.mean), "ci95": _nulls([i.lo, i.hi])}
    return {"success": {s: interval(by_suite[s]["all"]) for s in params.strategies},
            "references": {r: {"success": interval(by_suite[r]["all"]),
                               "baseline_minus_reference": {k: interval(v) for k, v in gaps[r].items()}}
                           for r in params.references},
            "versus_baseline": {c.key: result(c) for c in versus}, "claims": {c.key: result(c) for c in claims},
            "power": {family: power_summary(p, params.target_mde) for family, p in powers.items()}}


def main(params: Params, tracking: TrackingParams, root: Path = Path(".")) -> dict[str, Any]:
    """Read every evaluation and training record, compute the statistics, write the report and its figures."""
    check_inputs(root, params)
    episodes: dict[tuple[str, int | None], list[dict[str, Any]]] = {
        (s, seed): read_evaluation(root, run_name(s, seed)) for s in params.strategies for seed in params.seeds}
    episodes |= {(r, None): read_evaluation(root, r, reference_stage(r)) for r in params.references}
    cells = make_cells(episodes)
    suites = ["all", *sorted({c.suite for c in cells})]
    categories = ["all", *sorted({k for c in cells for k in c.categories})]
    scopes = {"all": Scope(), **{s: Scope(suites=(s,)) for s in suites[1:]}}
    by_suite = success_table(cells, params, scopes)
    by_category = success_table(cells, params, {"all": Scope(), **{k: Scope(categories=(k,)) for k in categories[1:]}})
    gaps = {r: {k: reference_gap(cells, r, params.seeds, scope, params) for k, scope in scopes.items()}
            for r in params.references}
    versus = compare(cells, strategy_tests(params.strategies), set(params.strategies), params, judge=False)
    claims = compare(cells, list(CLAIMS), set(params.strategies), params, judge=True)
    powers = {family: power_of(family_comparisons, params.alpha, params.target_mde, len(params.seeds))
              for family, family_comparisons in (("claims", claims), ("versus_baseline", versus))}
    finetune = finetune_means(root, params)
    curves = {s: {seed: read_curve(root / FINETUNE_CURVES / f"{run_name(s, seed)}.csv") for seed in params.seeds}
              for s in params.strategies}
    policy_episodes = {len(items) for (s, _), items in episodes.items() if s == BASELINE}
    setup = {**to_dict(params), "episodes": sum(len(v) for v in episodes.values()), "n_seeds": len(params.seeds),
             "episodes_per_policy": "/".join(str(n) for n in sorted(policy_episodes))}
    study = Study(setup, by_suite, suites, by_category, categories, versus, claims, powers["versus_baseline"],
                  powers["claims"], gaps, read_json(root / LAM_METRICS), read_json(root / TOKENIZER_METRICS), finetune)

    with StageRun(STAGE, to_dict(params), tracking, root) as run:
        with atomic_dir(root / REPORT_DIR) as tmp:
            references = list(params.references)
            bar_chart(by_suite, suites, "Success by evaluation suite", tmp / "success_by_suite.png", references)
            bar_chart(by_category, categories, "Success by task category", tmp / "success_by_category.png",
                      references)
            curve_chart(curves, tmp / "training_curves.png", BASELINE)
            (tmp / REPORT_FILE).write_text(markdown(study))
        metrics = summary(by_suite, versus, claims, powers, gaps, params)
        write_json(root / METRICS, metrics)
        success = metrics["success"] | {r: v["success"] for r, v in metrics["references"].items()}
        run.log_metrics({f"success/{s}": v["mean"] for s, v in success.items() if v["mean"] is not None})
        run.set_tags({f"claim.{c.key}": c.verdict or "not tested" for c in claims})
    log.info("report: %s", json.dumps({c.key: c.verdict or c.note for c in claims}))
    return metrics


def _null(value: float | None) -> float | None:
    """NaN as JSON null."""
    return None if value is None or np.isnan(value) else float(value)


def _nulls(values: list[float]) -> list[float | None]:
    """NaNs as JSON nulls."""
    return [_null(v) for v in values]


if __name__ == "__main__":
    run_stage(STAGE, Params, main)
