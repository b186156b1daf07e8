"""MLflow lineage: matrix items name their runs; the flow tags each stage's child run with its dvc.lock entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.dvc_graph import LockedPath, StageInfo
from common.tracking import (
    DVC_STAGE_ENV,
    PARENT_RUN_ENV,
    StageRun,
    TrackingParams,
    lineage_tags,
    open_study_run,
    params_digest,
    record_stage_lineage,
    resolve_tracking_uri,
    stage_address,
)

TRACKING = TrackingParams(enabled=True, uri="", experiment="lineage")
STAGE = StageInfo(name="finetune@la_tok-0", cmd="python -m stages.finetune --strategy la_tok --seed 0",
                  upstream=("extract",), deps=(LockedPath("data/extract/action_tokens.hdf5", "aa11", True),),
                  outs=(LockedPath("models/finetune/la_tok-0", "bb22.dir", True),
                        LockedPath("metrics/finetune/la_tok-0.json", "cc33", False)),
                  locked_params={"params.yaml": {"finetune": {"chunk": 8}}},
                  current_params={"params.yaml": {"finetune": {"chunk": 8}}})


def test_stage_address_names_the_matrix_item(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DVC_STAGE_ENV, raising=False)
    assert stage_address("finetune") == "finetune"
    assert stage_address("finetune", item="la_tok-0") == "finetune@la_tok-0"
    monkeypatch.setenv(DVC_STAGE_ENV, "finetune@la_tok-0")  # what DVC sets for the stage's command
    assert stage_address("finetune") == "finetune@la_tok-0"
    assert stage_address("evaluate") == "evaluate"  # a stray value from another stage is ignored
    monkeypatch.setenv(DVC_STAGE_ENV, "finetune_extra")
    assert stage_address("finetune") == "finetune"


def test_lineage_tags_hold_every_locked_hash() -> None:
    tags = lineage_tags(STAGE)
    assert tags == {"dvc.lock.dep.data/extract/action_tokens.hdf5": "aa11",
                    "dvc.lock.out.models/finetune/la_tok-0": "bb22.dir",
                    "dvc.lock.out.metrics/finetune/la_tok-0.json": "cc33",
                    "dvc.lock.params": params_digest(STAGE.locked_params), "dvc.stage": "finetune@la_tok-0"}
    assert params_digest({"params.yaml": {"finetune": {"chunk": 9}}}) != tags["dvc.lock.params"]


def test_child_runs_are_found_or_created_and_tagged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    parent = open_study_run(TRACKING, tmp_path, "study", {"study.flow": "test"})
    monkeypatch.setenv(PARENT_RUN_ENV, parent)
    monkeypatch.setenv(DVC_STAGE_ENV, "finetune@la_tok-0")
    with StageRun("finetune", {"chunk": 8}, TRACKING, tmp_path) as run:
        run.log_metrics({"loss": 0.5})
    client = mlflow.MlflowClient(resolve_tracking_uri(TRACKING, tmp_path))
    stored = client.get_run(run.run_id)
    assert stored.info.run_name == "finetune@la_tok-0"
    assert stored.data.tags["dvc.stage"] == "finetune@la_tok-0" and stored.data.tags["dvc.stage.base"] == "finetune"

    assert record_stage_lineage(TRACKING, tmp_path, parent, STAGE) == run.run_id  # the stage's own run
    tagged = client.get_run(run.run_id).data.tags
    assert tagged["lineage.source"] == "stage" and tagged["dvc.lock.out.models/finetune/la_tok-0"] == "bb22.dir"

    other = StageInfo(**{**STAGE.__dict__, "name": "finetune@la_tok-1"})  # ran nothing (up to date)
    created = record_stage_lineage(TRACKING, tmp_path, parent, other)
    record = client.get_run(created)
    assert created != run.run_id and record.info.status == "FINISHED"
    assert record.data.tags["lineage.source"] == "flow" and record.data.tags["mlflow.parentRunId"] == parent
    assert record.info.run_name == "finetune@la_tok-1"
