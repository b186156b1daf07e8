"""Audit a reported number: walk its chain of stages back to the demonstrations and check that the files on disk,
dvc.lock and MLflow all tell the same story.

Checks, for every stage in the chain: dvc.lock has an entry; each output's md5 on disk (recomputed here, not
taken from DVC's hash cache) equals dvc.lock's; each data input was the output its producer last wrote (the
chain is unbroken); code inputs and params are unchanged since the stage ran; and a FINISHED MLflow run of the
stage recorded the same input and output hashes and params (its own record, taken by the stage under any
`dvc repro`, and the flow's copy of dvc.lock), or, for runs from before stages recorded hashes, at least the same
params. Any disagreement is a `Finding`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

from common.config import load_section
from common.dvc_graph import GraphError, StageInfo, dvc_md5, dvcignore, read_stages, with_upstream
from common.lineage import DEP_TAG, OUT_TAG, PARAMS_TAG, recorded
from common.study_runs import LOCK_DEP_TAG, LOCK_OUT_TAG, LOCK_PARAMS_TAG, stage_runs
from common.tracking import TrackingParams, flatten, params_digest


@dataclasses.dataclass(frozen=True)
class Finding:
    """One disagreement between the files on disk, dvc.lock and MLflow."""

    stage: str
    message: str  # what disagrees, with both values and the command that fixes it

    def __str__(self) -> str:
        return f"{self.stage}: {self.message}"


@dataclasses.dataclass(frozen=True)
class PathCheck:
    """A stage's input or output: what dvc.lock recorded, what is on disk now, who produced it."""

    path: str
    locked: str | None
    on_disk: str | None  # None: missing
    producer: str | None  # upstream stage(s) that write it (inputs only); None: a source file


@dataclasses.dataclass(frozen=True)
class StageAudit:
    """Everything the audit found out about one stage."""

    stage: StageInfo
    inputs: tuple[PathCheck, ...]
    outputs: tuple[PathCheck, ...]
    mlflow: str  # which run agreed, or why MLflow was not checked
    findings: tuple[Finding, ...]


@dataclasses.dataclass(frozen=True)
class ReportedNumber:
    """A number from a metrics file and the stage that wrote it."""

    file: str
    key: str
    value: Any
    stage: str


def default_targets(stages: list[StageInfo]) -> list[str]:
    """Every evaluation (stages named `evaluate` or `evaluate@...`); without any, the graph's final stages."""
    evaluations = [s.name for s in stages if s.name.split("@")[0] == "evaluate"]
    if evaluations:
        return evaluations
    consumed = {u for s in stages for u in s.upstream}
    return [s.name for s in stages if s.name not in consumed]


def cached_outputs(root: Path, stages: list[StageInfo], targets: list[str]) -> tuple[int, int]:
    """(DVC-cached outputs of the targets' chains, how many of them exist on disk): a fresh clone has none."""
    paths = [o.path for s in with_upstream(stages, targets or default_targets(stages)) for o in s.outs if o.cached]
    return len(paths), sum((root / path).exists() for path in paths)


def find_reported_number(root: Path, stages: list[StageInfo], spec: str) -> ReportedNumber:
    """Resolve `FILE:dotted.key` (e.g. `metrics/evaluate/la_tok-0.json:success.rate`) to its value and stage."""
    file, _, key = spec.partition(":")
    producer = next((s.name for s in stages for o in s.outs if o.path == file), None)
    if producer is None:
        raise GraphError(f"--metric {spec}: no stage in dvc.yaml writes {file!r}; pass a metrics file a stage outputs")
    path = root / file
    if not path.is_file():
        raise GraphError(f"--metric {spec}: {path} is missing; run `dvc repro {producer}`")
    value: Any = json.loads(path.read_text())
    for part in key.split(".") if key else ():
        if not isinstance(value, dict) or part not in value:
            choices = sorted(value) if isinstance(value, dict) else []
            raise GraphError(f"--metric {spec}: {file} has no key {part!r} here; keys: {choices}")
        value = value[part]
    return ReportedNumber(file=file, key=key, value=value, stage=producer)


def audit(root: Path, targets: list[str], check_mlflow: bool = True) -> list[StageAudit]:
    """Audit the targets' chains (targets and everything upstream), upstream first."""
    stages = read_stages(root)
    chain = with_upstream(stages, targets or default_targets(stages))
    producers = {o.path: s for s in stages for o in s.outs}
    ignored = dvcignore(root)
    tracking = load_section(root / "params.yaml", "tracking", TrackingParams) if check_mlflow else None
    return [_audit_stage(root, stage, producers, ignored, tracking) for stage in chain]


def _md5_on_disk(root: Path, path: str, ignored: Callable[[Path], bool]) -> str | None:
    full = root / path
    return dvc_md5(full, ignored) if full.exists() else None


def _audit_stage(root: Path, stage: StageInfo, producers: dict[str, StageInfo], ignored: Callable[[Path], bool],
                 tracking: TrackingParams | None) -> StageAudit:
    findings: list[Finding] = []
    rerun = f"rerun `dvc repro {stage.name}`"
    if not stage.locked:
        never = f"dvc.lock has no entry: the stage never ran; run `dvc repro {stage.name}`"
        findings.append(Finding(stage.name, never))
    outputs = tuple(PathCheck(o.path, o.md5, _md5_on_disk(root, o.path, ignored), None) for o in stage.outs)
    for out in outputs:
        if stage.locked and out.on_disk != out.locked:
            if out.on_disk is None:
                findings.append(Finding(stage.name, f"output {out.path} is not on disk (dvc.lock records "
                                                    f"{out.locked}): {rerun}, or `dvc checkout` it from a DVC cache "
                                                    "that holds it"))
            else:
                findings.append(Finding(stage.name, f"output {out.path} has md5 {out.on_disk} on disk, dvc.lock "
                                                    f"records {out.locked}: the file was modified after the stage "
                                                    f"ran; {rerun} (or `dvc checkout`)"))
    inputs = []
    for dep in stage.deps:
        producer = producers.get(dep.path)
        # A folder holding several stages' outputs (e.g. results/evaluate): name them; its md5 is checked on disk.
        inside = sorted({s.name for path, s in producers.items() if path.startswith(dep.path.rstrip("/") + "/")})
        origin = producer.name if producer else (", ".join(inside) if inside else None)
        check = PathCheck(dep.path, dep.md5, _md5_on_disk(root, dep.path, ignored), origin)
        inputs.append(check)
        if not stage.locked:
            continue
        if producer is not None:
            made = next(o.md5 for o in producer.outs if o.path == dep.path)
            if made != dep.md5:
                findings.append(Finding(stage.name, f"input {dep.path} had md5 {dep.md5} when this stage ran, but "
                                                    f"{producer.name} last wrote {made}: the chain is broken; {rerun}"))
        elif check.on_disk != dep.md5:
            findings.append(Finding(stage.name, f"input {dep.path} has md5 {check.on_disk} on disk, dvc.lock "
                                                f"records {dep.md5}: it changed after the stage ran; {rerun}"))
    for file, locked in stage.locked_params.items():
        now = flatten(stage.current_params.get(file, {}))
        changed = sorted(k for k, v in flatten(locked).items() if now.get(k) != v)
        if changed:
            findings.append(Finding(stage.name, f"params {changed} in {file} changed after the stage ran; {rerun}"))
    mlflow_note = "not checked (--no-mlflow)"
    if tracking is not None:
        mlflow_note, mlflow_findings = _check_mlflow(root, stage, tracking)
        findings.extend(mlflow_findings)
    return StageAudit(stage, tuple(inputs), outputs, mlflow_note, tuple(findings))


def _same(recorded: str, locked: Any) -> bool:
    """An MLflow param string against a dvc.lock value (MLflow stores JSON text; strings are stored bare)."""
    try:
        return json.loads(recorded) == json.loads(locked) if isinstance(locked, str) else json.loads(recorded) == locked
    except json.JSONDecodeError:
        return recorded == locked


def _records(tags: dict[str, str]) -> dict[str, tuple[dict[str, str], dict[str, str], str | None]]:
    """The (inputs, outputs, params digest) a run recorded: the stage's own hashes (common/lineage.py) and the
    flow's copy of dvc.lock (common/study_runs.py `lineage_tags`), whichever it has."""
    sources = {"the stage's own hashes": (DEP_TAG, OUT_TAG, PARAMS_TAG),
               "the flow's dvc.lock entry": (LOCK_DEP_TAG, LOCK_OUT_TAG, LOCK_PARAMS_TAG)}
    return {source: (recorded(tags, dep), recorded(tags, out), tags.get(params))
            for source, (dep, out, params) in sources.items() if any(k.startswith(out) for k in tags)}


def _check_mlflow(root: Path, stage: StageInfo, tracking: TrackingParams) -> tuple[str, list[Finding]]:
    """Find a FINISHED run of the stage that agrees with dvc.lock: on hashes and params if it recorded hashes (every
    run it recorded agrees), else on params."""
    if not tracking.enabled:
        return "not checked (tracking.enabled is false)", []
    if not stage.locked:
        return "not checked (never ran)", []
    runs = stage_runs(tracking, root, stage.name)
    if not runs:
        return "no run", [Finding(stage.name, f"MLflow ({tracking.experiment}) has no FINISHED run tagged dvc.stage = "
                                              f"{stage.name}; rerun it through `make study-parallel`")]
    locked = ({d.path: d.md5 for d in stage.deps}, {o.path: o.md5 for o in stage.outs},
              params_digest(stage.locked_params))
    with_lineage = [r for r in runs if _records(r.data.tags)]
    for run in with_lineage:
        if all(record == locked for record in _records(run.data.tags).values()):
            return f"run {run.info.run_id} (input and output hashes and params agree)", []
    if with_lineage:
        newest = with_lineage[0]
        differ = {source: f"outputs {outs}" if outs != locked[1] else f"inputs {deps}" if deps != locked[0] else
                  f"params digest {digest}" for source, (deps, outs, digest) in _records(newest.data.tags).items()
                  if (deps, outs, digest) != locked}
        return "disagrees", [Finding(stage.name, f"no MLflow run recorded dvc.lock's outputs {locked[1]} (and its "
                                                 f"inputs and params); the newest ({newest.info.run_id}) recorded "
                                                 f"{differ}; rerun `dvc repro --force {stage.name}`")]
    flat = {k: v for section in stage.locked_params.values() for value in section.values() if isinstance(value, dict)
            for k, v in flatten(value).items()}
    if not flat:
        return f"run {runs[0].info.run_id} (no params to compare; no hashes recorded)", []
    for run in runs:
        shared = set(run.data.params) & set(flat)
        if shared and all(_same(run.data.params[k], flat[k]) for k in shared):
            return f"run {run.info.run_id} (params agree; no hashes recorded)", []
    return "disagrees", [Finding(stage.name, f"none of the {len(runs)} FINISHED MLflow run(s) of the stage logged "
                                             "the params dvc.lock records; rerun it through `make study-parallel`")]
