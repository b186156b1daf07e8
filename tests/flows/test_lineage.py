"""MLflow lineage: matrix items name their runs; a stage run by plain `dvc repro` records the hashes dvc.lock
records; the flow tags each stage's child run with its dvc.lock entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from common.audit import audit
from common.dvc_graph import LockedPath, StageInfo, read_stages
from common.lineage import ARTIFACT, DEP_TAG, OUT_TAG, PARAMS_TAG, STATUS_TAG, declared, recorded
from common.study_runs import lineage_tags, open_study_run, record_stage_lineage, stage_runs
from common.tracking import (
    DVC_STAGE_ENV,
    PARENT_RUN_ENV,
    StageRun,
    TrackingParams,
    params_digest,
    resolve_tracking_uri,
    stage_address,
)
from tests.flows.toy import PROJECT, dvc, init_repo, toy_repo

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


def test_plain_dvc_repro_leaves_a_stage_run_holding_dvc_locks_hashes(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    root = toy_repo(tmp_path / "repo", sleep_s=0)
    dvc_yaml = yaml.safe_load((root / "dvc.yaml").read_text())
    dvc_yaml["stages"]["join"]["params"] = ["toy"]  # so that the params digest has something to agree on
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    monkeypatch.setenv("PYTHONPATH", str(PROJECT))
    dvc(root, "repro")  # no flow: no parent run, no dvc.lock tags
    join = next(s for s in read_stages(root) if s.name == "join")
    toy = TrackingParams(enabled=True, uri="", experiment="toy")
    [run] = stage_runs(toy, root, "join")
    tags = run.data.tags
    assert tags[STATUS_TAG] == "recorded" and "mlflow.parentRunId" not in tags
    assert recorded(tags, DEP_TAG) == {d.path: d.md5 for d in join.deps}  # stage.py, out/a.json, out/b.json
    assert recorded(tags, OUT_TAG) == {o.path: o.md5 for o in join.outs}
    assert recorded(tags, OUT_TAG)["out/join_dir"].endswith(".dir")  # DVC's folder md5
    assert tags[PARAMS_TAG] == params_digest(join.locked_params) and join.locked_params
    import mlflow

    client = mlflow.MlflowClient(resolve_tracking_uri(toy, root))
    record = json.loads(Path(client.download_artifacts(run.info.run_id, ARTIFACT, str(tmp_path))).read_text())
    assert record["stage"] == "join" and record["outs"] == recorded(tags, OUT_TAG)
    assert record["deps"] == recorded(tags, DEP_TAG) and record["params"] == join.locked_params
    [result] = [r for r in audit(root, ["join"]) if r.stage.name == "join"]
    assert not result.findings and "hashes and params agree" in result.mlflow, result.mlflow
    client.set_tag(run.info.run_id, f"{OUT_TAG}out/join.json", "0" * 32)  # a record that disagrees with dvc.lock
    [result] = [r for r in audit(root, ["join"]) if r.stage.name == "join"]
    assert result.mlflow == "disagrees" and "the stage's own hashes" in str(result.findings[0]), result.findings


def test_a_stage_module_run_under_another_stage_name_takes_dvcs_name(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    stages = {"evaluate_reference": {"cmd": "python -m stages.evaluate --name reference", "deps": ["a.txt"],
                                     "outs": ["out.json"]},
              "other": {"cmd": "python -m stages.other", "deps": ["a.txt"], "outs": ["other.json"]}}
    root = init_repo(tmp_path / "repo", {"stages": stages}, {}, {"a.txt": "a"})
    monkeypatch.setenv(DVC_STAGE_ENV, "evaluate_reference")  # what DVC sets while it runs that stage
    found = declared(root, "evaluate")
    assert not isinstance(found, str) and (found.address, found.deps, found.outs) == (
        "evaluate_reference", ("a.txt",), ("out.json",))
    monkeypatch.setenv(DVC_STAGE_ENV, "other")  # a stage that runs another module: not this stage's
    assert declared(root, "evaluate") == f"dvc.yaml at {root} has no stage 'evaluate'"
