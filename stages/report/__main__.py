"""Run the `report` stage: `python -m stages.report [--params params.yaml]`."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_dir, write_json
from common.cli import StageError, run_stage
from common.config import to_dict
from common.tracking import StageRun, TrackingParams
from stages.report import (
    EVAL_METRICS,
    EVAL_RESULTS,
    FINETUNE_CURVES,
    FINETUNE_METRICS,
    LAM_METRICS,
    METRICS,
    REPORT_DIR,
    REPORT_FILE,
    STAGE,
    TOKENIZER_METRICS,
    Params,
    inputs,
    run_name,
)
from stages.report.analysis import (
    CLAIMS,
    Cell,
    Comparison,
    Scope,
    compare,
    make_cells,
    read_episodes,
    strategy_tests,
    success_interval,
)
from stages.report.render import Table, bar_chart, curve_chart, markdown

log = logging.getLogger(__name__)


def check_inputs(root: Path, params: Params) -> None:
    """Every input must exist; list all that are missing, with the command that makes them."""
    missing = [p for p in inputs(params.strategies, params.seeds) if not (root / p).is_file()]
    if missing:
        shown = "\n".join(f"  - {p}" for p in missing[:20]) + ("\n  ..." if len(missing) > 20 else "")
        raise StageError(f"{len(missing)} report input(s) missing under {root}:\n{shown}\nrun the stages that write "
                         "them (`dvc repro evaluate`, `dvc repro finetune`, `dvc repro lam action_vq`) or fix "
                         "report.strategies / report.seeds")


def read_evaluation(root: Path, name: str) -> list[dict[str, Any]]:
    """One policy's episodes, checked against the totals evaluate wrote beside them."""
    episodes = read_episodes(root / EVAL_RESULTS / name / "episodes.jsonl")
    metrics_file = root / EVAL_METRICS / f"{name}.json"
    totals = read_json(metrics_file).get("success", {})
    counted = {"n": len(episodes), "successes": sum(bool(e["success"]) for e in episodes)}
    if {k: totals.get(k) for k in counted} != counted:
        raise StageError(f"{metrics_file}: success {totals} disagrees with the {counted['n']} episodes in "
                         f"{EVAL_RESULTS / name} ({counted}); rerun `dvc repro evaluate@{name}`")
    return episodes


def read_json(path: Path) -> dict[str, Any]:
    """A metrics file as a dict, with the file named in the error."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise StageError(f"{path}: not valid JSON ({exc}); rerun the stage that writes it") from exc
    if not isinstance(data, dict):
        raise StageError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_curve(path: Path) -> dict[str, np.ndarray]:
    """finetune's training curve CSV: a `step` column and one column per logged loss."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "step" not in rows[0] or len(rows[0]) < 2:
        raise StageError(f"{path}: expected a header `step,<loss>...` and at least one row; rerun finetune")
    return {k: np.array([float(r[k]) if r[k] not in ("", None) else np.nan for r in rows]) for k in rows[0]}


def success_table(cells: list[Cell], params: Params, columns: dict[str, Scope]) -> Table:
    """Strategy x column: mean over seeds with its bootstrap interval."""
    return {s: {name: success_interval(cells, s, params.seeds, scope, params) for name, scope in columns.items()}
            for s in params.strategies}


def summary(by_suite: Table, versus: list[Comparison], claims: list[Comparison]) -> dict[str, Any]:
    """metrics/report.json: the headline numbers (success over all episodes, comparisons, verdicts)."""
    def result(c: Comparison) -> dict[str, Any]:
        if c.result is None:
            return {"tested": False, "note": c.note}
        r = c.result
        return {"tested": True, "diff": r.mean_diff, "ci95": [r.lo, r.hi], "p": r.p_value, "p_holm": c.p_holm,
                **({"verdict": c.verdict} if c.verdict else {})}
    return {"success": {s: {"mean": row["all"].mean, "ci95": [row["all"].lo, row["all"].hi]}
                        for s, row in by_suite.items()},
            "versus_baseline": {c.key: result(c) for c in versus}, "claims": {c.key: result(c) for c in claims}}


def main(params: Params, tracking: TrackingParams, root: Path = Path(".")) -> dict[str, Any]:
    """Read every evaluation and training record, compute the statistics, write the report and its figures."""
    check_inputs(root, params)
    episodes = {(s, seed): read_evaluation(root, run_name(s, seed)) for s in params.strategies for seed in params.seeds}
    cells = make_cells(episodes)
    suites = sorted({c.suite for c in cells})
    categories = sorted({k for c in cells for k in c.categories})
    by_suite = success_table(cells, params, {"all": Scope(), **{s: Scope(suites=(s,)) for s in suites}})
    by_category = success_table(cells, params, {"all": Scope(), **{k: Scope(categories=(k,)) for k in categories}})
    versus = compare(cells, strategy_tests(params.strategies), set(params.strategies), params, judge=False)
    claims = compare(cells, list(CLAIMS), set(params.strategies), params, judge=True)
    finetune = {s: {k: float(np.mean([read_json(root / FINETUNE_METRICS / f"{run_name(s, seed)}.json")[k]
                                      for seed in params.seeds]))
                    for k in _shared_scalars([read_json(root / FINETUNE_METRICS / f"{run_name(s, seed)}.json")
                                              for seed in params.seeds])}
                for s in params.strategies}
    curves = {s: {seed: read_curve(root / FINETUNE_CURVES / f"{run_name(s, seed)}.csv") for seed in params.seeds}
              for s in params.strategies}
    setup = {**to_dict(params), "episodes": sum(len(v) for v in episodes.values())}

    with StageRun(STAGE, to_dict(params), tracking, root) as run:
        with atomic_dir(root / REPORT_DIR) as tmp:
            bar_chart(by_suite, ["all", *suites], "Success by evaluation suite", tmp / "success_by_suite.png")
            bar_chart(by_category, ["all", *categories], "Success by task category", tmp / "success_by_category.png")
            curve_chart(curves, tmp / "training_curves.png")
            (tmp / REPORT_FILE).write_text(markdown(setup, by_suite, ["all", *suites], by_category,
                                                    ["all", *categories], versus, claims,
                                                    read_json(root / LAM_METRICS),
                                                    read_json(root / TOKENIZER_METRICS), finetune))
        metrics = summary(by_suite, versus, claims)
        write_json(root / METRICS, metrics)
        run.log_metrics({f"success/{s}": v["mean"] for s, v in metrics["success"].items()})
        run.set_tags({f"claim.{c.key}": c.verdict or "not tested" for c in claims})
    log.info("report: %s", json.dumps({c.key: c.verdict or c.note for c in claims}))
    return metrics


def _shared_scalars(rows: list[dict[str, Any]]) -> list[str]:
    """Numeric top-level keys present in every seed's finetune metrics."""
    keys = set.intersection(*({k for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
                              for r in rows))
    return sorted(keys)


if __name__ == "__main__":
    run_stage(STAGE, Params, main)
