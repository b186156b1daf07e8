from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.tracking import PARENT_RUN_ENV, StageRun, TrackingParams, flatten, resolve_tracking_uri


def test_default_uri_is_an_absolute_sqlite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = TrackingParams(enabled=True, uri="", experiment="e")
    assert resolve_tracking_uri(params, tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert resolve_tracking_uri(TrackingParams(True, "sqlite:////x.db", "e"), tmp_path) == "sqlite:////x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////env.db")
    assert resolve_tracking_uri(params, tmp_path) == "sqlite:////env.db"


def test_flatten_nests_with_dots_and_serialises_values() -> None:
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": True}) == {
        "a.b": "1", "a.c": "[1, 2]", "d": "x", "e": "true"}


def test_stage_run_records_params_tags_and_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv(PARENT_RUN_ENV, "parent123")
    params = TrackingParams(enabled=True, uri="", experiment="unit")
    with StageRun("collect", {"seed": 3, "nested": {"k": "v"}}, params, root=tmp_path) as run:
        run.log_metrics({"a": 1.0, "b": 2.5})
        run.log_metrics({"a": 2.0}, step=1)
    client = mlflow.MlflowClient(resolve_tracking_uri(params, tmp_path))
    stored = client.get_run(run.run_id)
    assert stored.info.run_name == "collect" and stored.info.status == "FINISHED"
    assert stored.data.params == {"seed": "3", "nested.k": "v"}
    assert stored.data.tags["dvc.stage"] == "collect"
    assert stored.data.tags["mlflow.parentRunId"] == "parent123"
    assert stored.data.tags["git.commit"]
    assert stored.data.metrics == {"a": 2.0, "b": 2.5}
    assert [m.value for m in client.get_metric_history(run.run_id, "a")] == [1.0, 2.0]


def test_failed_stage_marks_its_run_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = TrackingParams(enabled=True, uri="", experiment="unit")
    with pytest.raises(RuntimeError):
        with StageRun("collect", {}, params, root=tmp_path) as run:
            raise RuntimeError("boom")
    client = mlflow.MlflowClient(resolve_tracking_uri(params, tmp_path))
    assert client.get_run(run.run_id).info.status == "FAILED"


def test_disabled_tracking_touches_nothing(tmp_path: Path) -> None:
    with StageRun("collect", {"x": 1}, TrackingParams(False, "", "e"), root=tmp_path) as run:
        run.log_metrics({"a": 1.0})
        run.set_tags({"t": "v"})
    assert run.run_id is None and list(tmp_path.iterdir()) == []


def test_a_run_does_not_leak_its_store_into_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with StageRun("collect", {}, TrackingParams(True, "", "t"), tmp_path):
        pass
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert resolve_tracking_uri(TrackingParams(True, "", "t"), tmp_path / "other").endswith("other/mlflow.db")
