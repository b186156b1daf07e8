"""A stage that keeps failing fails the flow, after its retries, and nothing downstream of it runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.tracking import TrackingParams, resolve_tracking_uri
from flows.study import FlowError, FlowOptions, run_study
from tests.flows.toy import failing_repo


def test_failing_stage_is_retried_then_fails_the_flow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    root = failing_repo(tmp_path / "repo")
    attempts = tmp_path / "attempts.txt"
    monkeypatch.setenv("TOY_ATTEMPTS", str(attempts))
    options = FlowOptions(root=root, targets=(), max_parallel=2, retries=1, retry_delay_s=0, runner="thread",
                          address=None)
    with pytest.raises(FlowError, match=r"2 of 3 stage\(s\) did not complete") as failure:
        run_study(options)
    assert "boom" in str(failure.value) and "after: not run" in str(failure.value)
    assert attempts.read_text().count("attempt") == 2  # one retry
    assert (root / "out/ok.json").is_file()  # the independent stage still ran
    assert not (root / "out/after.json").exists()
    client = mlflow.MlflowClient(resolve_tracking_uri(TrackingParams(True, "", "toy"), root))
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("toy").experiment_id])}
    assert set(runs) == {"study", "ok"} and runs["study"].info.status == "FAILED"  # no record for boom/after


def test_unknown_target_and_bad_options_are_clear_errors(tmp_path: Path) -> None:
    from common.dvc_graph import GraphError, read_stages, with_upstream

    root = failing_repo(tmp_path / "repo")
    stages = read_stages(root)
    assert [s.name for s in with_upstream(stages, ["after"])] == ["boom", "after"]
    with pytest.raises(GraphError, match="no stage"):
        with_upstream(stages, ["afterr"])
    with pytest.raises(FlowError, match="max-parallel"):
        FlowOptions(root=root, targets=(), max_parallel=0, retries=0, retry_delay_s=0, runner="thread", address=None)
