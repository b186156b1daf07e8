"""The study flow's MLflow records: one parent run per execution of the study, and on each stage's child run its
dvc.lock entry (DVC's md5 of every dependency and output, a digest of its params), so that the audit can trace a
number to the data, code and parameters that produced it. Each stage's own run is common/tracking.py's `StageRun`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from common.dvc_graph import StageInfo
from common.provenance import git_commit
from common.tracking import TrackingParams, experiment_of, params_digest, resolve_tracking_uri, set_tags

# Tags of the lineage record (see `lineage_tags`): one per dependency/output path, holding DVC's md5.
LOCK_DEP_TAG, LOCK_OUT_TAG, LOCK_PARAMS_TAG = "dvc.lock.dep.", "dvc.lock.out.", "dvc.lock.params"


def lineage_tags(stage: StageInfo) -> dict[str, str]:
    """A stage's dvc.lock entry as run tags: DVC's md5 of each dependency and output, and a digest of its params."""
    tags = {f"{LOCK_DEP_TAG}{d.path}": d.md5 or "" for d in stage.deps}
    tags.update({f"{LOCK_OUT_TAG}{o.path}": o.md5 or "" for o in stage.outs})
    tags[LOCK_PARAMS_TAG] = params_digest(stage.locked_params)
    tags["dvc.stage"] = stage.name
    return tags


def client_and_experiment(tracking: TrackingParams, root: Path) -> tuple[Any, str]:
    """An MLflow client of the tracking store and the experiment's id (created if new)."""
    import mlflow  # lazy: seconds of import time

    client = mlflow.MlflowClient(resolve_tracking_uri(tracking, root))
    return client, experiment_of(client, tracking, root)


def open_study_run(tracking: TrackingParams, root: Path, name: str, tags: Mapping[str, str]) -> str | None:
    """Start the parent run of one study execution; None when tracking is off. Hand its id to stages via
    the environment variable PARENT_RUN_ENV."""
    if not tracking.enabled:
        return None
    client, experiment_id = client_and_experiment(tracking, root)
    run = client.create_run(experiment_id, run_name=name, tags={"git.commit": git_commit(root), **tags})
    return run.info.run_id


def close_run(tracking: TrackingParams, root: Path, run_id: str | None, failed: bool) -> None:
    """Mark a run FINISHED or FAILED (nothing when tracking is off)."""
    if run_id is not None:
        client, _ = client_and_experiment(tracking, root)
        client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")


def stage_runs(tracking: TrackingParams, root: Path, stage: str, parent_run_id: str | None = None) -> list[Any]:
    """FINISHED MLflow runs of a stage (its DVC address), newest first; only a study's children if a parent is given."""
    return _finished_runs(*client_and_experiment(tracking, root), stage, parent_run_id)


def _finished_runs(client: Any, experiment_id: str, stage: str, parent_run_id: str | None) -> list[Any]:
    query = f"tags.`dvc.stage` = '{stage}' and attributes.status = 'FINISHED'"
    if parent_run_id:
        query += f" and tags.`mlflow.parentRunId` = '{parent_run_id}'"
    return list(client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1000))


def record_stage_lineage(tracking: TrackingParams, root: Path, parent_run_id: str, stage: StageInfo) -> str:
    """Tag the stage's child run of this study with its dvc.lock entry; return the run id.

    A stage DVC found up to date (or one that does not track itself) has no run under this parent: a child run is
    created for it, tagged `lineage.source = flow`, so every stage of every study execution has its record.
    """
    client, experiment_id = client_and_experiment(tracking, root)
    runs = _finished_runs(client, experiment_id, stage.name, parent_run_id)
    if runs:
        run_id = runs[0].info.run_id
        source = "stage"
    else:
        run = client.create_run(experiment_id, run_name=stage.name, tags={
            "mlflow.parentRunId": parent_run_id, "git.commit": git_commit(root)})
        run_id, source = run.info.run_id, "flow"
    set_tags(client, run_id, {**lineage_tags(stage), "lineage.source": source})
    if source == "flow":
        client.set_terminated(run_id, status="FINISHED")
    return run_id
