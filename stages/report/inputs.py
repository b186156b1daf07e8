"""The report's inputs: evaluate's episodes and totals, finetune's metrics and curves, checked as they are read."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from common.cli import StageError
from stages.report import (
    CURVE_COLUMN,
    EVAL_METRICS,
    EVAL_RESULTS,
    Params,
    evaluation_files,
    inputs,
    reference_stage,
)

_EPISODE_FIELDS = {"task": str, "suite": str, "categories": list, "success": bool}


def check_inputs(root: Path, params: Params) -> None:
    """Every input must exist; list all that are missing, with the command that makes them."""
    missing = [p for p in inputs(params.strategies, params.seeds) if not (root / p).is_file()]
    references = [(p, reference_stage(name)) for name in params.references for p in evaluation_files(name)
                  if not (root / p).is_file()]
    lines = []
    if missing:
        shown = "\n".join(f"  - {p}" for p in missing[:20]) + ("\n  ..." if len(missing) > 20 else "")
        lines.append(f"{shown}\nrun the stages that write them (`dvc repro evaluate`, `dvc repro finetune`, "
                     "`dvc repro lam action_vq`) or fix study.items")
    if references:
        lines.append("\n".join(f"  - {p}: run `dvc repro {stage}`" for p, stage in references)
                     + "\n(reference policies listed in report.references; remove a name there to report without it)")
    if lines:
        raise StageError(f"{len(missing) + len(references)} report input(s) missing under {root}:\n"
                         + "\n".join(lines))


def read_json(path: Path) -> dict[str, Any]:
    """A metrics file as a dict, with the file named in the error."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise StageError(f"{path}: not valid JSON ({exc}); rerun the stage that writes it") from exc
    if not isinstance(data, dict):
        raise StageError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_episodes(path: Path, stage: str) -> list[dict[str, Any]]:
    """evaluate's episodes.jsonl, each line checked for the fields the report uses."""
    if not path.is_file():
        raise StageError(f"{path} is missing; run `dvc repro {stage}`")
    episodes = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            episode = json.loads(line)
        except json.JSONDecodeError as exc:
            raise StageError(f"{path}:{number}: not JSON ({exc}); rerun `dvc repro {stage}`") from exc
        for field, kind in _EPISODE_FIELDS.items():
            if not isinstance(episode.get(field), kind):
                raise StageError(f"{path}:{number}: field {field!r} = {episode.get(field)!r} is not a "
                                 f"{kind.__name__}; the file does not follow evaluate's contract")
        episodes.append(episode)
    if not episodes:
        raise StageError(f"{path} has no episodes; rerun `dvc repro {stage}`")
    return episodes


def read_evaluation(root: Path, name: str, stage: str | None = None) -> list[dict[str, Any]]:
    """One policy's episodes, checked against the totals evaluate wrote beside them (stage: what rewrites them)."""
    stage = stage or f"evaluate@{name}"
    episodes = read_episodes(root / EVAL_RESULTS / name / "episodes.jsonl", stage)
    metrics_file = root / EVAL_METRICS / f"{name}.json"
    totals = read_json(metrics_file).get("success", {})
    counted = {"n": len(episodes), "successes": sum(bool(e["success"]) for e in episodes)}
    if {k: totals.get(k) for k in counted} != counted:
        raise StageError(f"{metrics_file}: success {totals} disagrees with the {counted['n']} episodes in "
                         f"{EVAL_RESULTS / name} ({counted}); rerun `dvc repro {stage}`")
    return episodes


def read_curve(path: Path) -> dict[str, np.ndarray]:
    """finetune's training curve CSV: a `step` column and one column per logged loss, the action L1 among them."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "step" not in rows[0] or CURVE_COLUMN not in rows[0]:
        header = ",".join(rows[0]) if rows else "(empty)"
        raise StageError(f"{path}: expected a header with `step` and `{CURVE_COLUMN}` and at least one row, got "
                         f"{header!r}; rerun `dvc repro finetune@{path.stem}`")
    return {k: np.array([float(r[k]) if r[k] not in ("", None) else np.nan for r in rows]) for k in rows[0]}


def shared_scalars(rows: list[dict[str, Any]]) -> list[str]:
    """Numeric top-level keys present in every seed's finetune metrics."""
    keys = set.intersection(*({k for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
                              for r in rows))
    return sorted(keys)
