from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from common.tracking import PARENT_RUN_ENV, StageRun, TrackingParams, flatten, resolve_tracking_uri

REPO = Path(__file__).resolve().parents[2]


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


CHILD = """
import sys, time
from pathlib import Path
from common.tracking import StageRun, TrackingParams
with StageRun("collect", {}, TrackingParams(True, "", "unit"), root=Path(sys.argv[1])) as run:
    Path(sys.argv[2]).write_text(run.run_id)
    time.sleep(120)
"""


def _child_run(tmp_path: Path) -> tuple[Any, str]:
    """A process inside a StageRun of `collect`, and its run id once the run exists."""
    flag = tmp_path / "run_id"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), str(flag)], cwd=REPO,
                             env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"})
    deadline = time.monotonic() + 60
    while not flag.exists() or not flag.read_text():
        assert child.poll() is None and time.monotonic() < deadline, "the child never opened its run"
        time.sleep(0.1)
    return child, flag.read_text()


def _status(tmp_path: Path, run_id: str) -> str:
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{tmp_path.resolve()}/mlflow.db").get_run(run_id).info.status


def test_a_killed_stage_run_is_marked_killed_by_the_next_run_of_the_stage(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    child, run_id = _child_run(tmp_path)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert _status(tmp_path, run_id) == "RUNNING"  # nothing could end it
    with StageRun("lam", {}, TrackingParams(True, "", "unit"), root=tmp_path):
        pass
    assert _status(tmp_path, run_id) == "RUNNING"  # another stage's run leaves it alone
    with StageRun("collect", {}, TrackingParams(True, "", "unit"), root=tmp_path) as again:
        assert _status(tmp_path, run_id) == "KILLED"
    assert _status(tmp_path, again.run_id) == "FINISHED"


def test_sigterm_and_ctrl_c_end_the_run_as_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    child, run_id = _child_run(tmp_path)
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=30) == -signal.SIGTERM  # it still dies of the signal
    assert _status(tmp_path, run_id) == "KILLED"
    with pytest.raises(KeyboardInterrupt):
        with StageRun("collect", {}, TrackingParams(True, "", "unit"), root=tmp_path) as run:
            raise KeyboardInterrupt
    assert _status(tmp_path, run.run_id) == "KILLED"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is the stage's only inside the run
