"""The Prefect flow over a toy DVC graph: two stages at once, lineage in MLflow, `dvc status` clean at the end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from common.study_runs import LOCK_OUT_TAG
from common.tracking import TrackingParams, resolve_tracking_uri
from flows.study import FlowOptions, run_study
from tests.flows.toy import PROJECT, dvc, toy_repo


def test_independent_stages_run_concurrently_then_status_is_clean(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    root = toy_repo(tmp_path / "repo", sleep_s=4.0)
    monkeypatch.setenv("PYTHONPATH", str(PROJECT))  # the `join` stage imports common.tracking
    options = FlowOptions(root=root, targets=(), max_parallel=2, retries=0, retry_delay_s=0, runner="thread",
                          address=None)
    states = run_study(options)
    assert states == {"sleep@a": "Completed", "sleep@b": "Completed", "join": "Completed"}

    a, b = (json.loads((root / f"out/{n}.json").read_text()) for n in ("a", "b"))
    assert max(a["start"], b["start"]) < min(a["end"], b["end"]), "the two sleep items did not overlap"
    assert json.loads((root / "out/join.json").read_text())["start"] >= max(a["end"], b["end"])
    assert "up to date" in dvc(root, "status").stdout

    # Lineage: one parent run; one child per stage, tagged with what dvc.lock says of its outputs.
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    client = mlflow.MlflowClient(resolve_tracking_uri(TrackingParams(True, "", "toy"), root))
    runs = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    parents = [r for r in runs if r.info.run_name == "study"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = {r.data.tags["dvc.stage"]: r for r in runs if r.data.tags.get("mlflow.parentRunId")}
    assert set(children) == {"sleep@a", "sleep@b", "join"}
    for name, run in children.items():
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        for out in lock[name]["outs"]:
            assert run.data.tags[f"{LOCK_OUT_TAG}{out['path']}"] == out["md5"]
    assert children["join"].data.tags["lineage.source"] == "stage"  # the stage's own StageRun, found and tagged
    assert children["join"].data.metrics == {"parts": 2.0}
    assert children["sleep@a"].data.tags["lineage.source"] == "flow"  # the toy stage does not track itself

    # A second execution finds everything cached: nothing reruns, and each stage still gets its record.
    before = (root / "out/join.json").read_text()
    run_study(options)
    assert (root / "out/join.json").read_text() == before
    assert len(client.search_runs([client.get_experiment_by_name("toy").experiment_id])) == 2 * len(runs)


def test_submission_puts_each_depth_together_and_the_long_chains_first() -> None:
    from common.dvc_graph import StageInfo
    from flows.study import submission_order

    def stage(name: str, *upstream: str) -> StageInfo:
        return StageInfo(name=name, cmd="true", upstream=upstream, deps=(), outs=(), locked_params={},
                         current_params={})

    # the study's shape: baseline beside the LAM, latent strategies after extract (graph order, ties by name)
    graph = [stage("collect"), stage("finetune@baseline-0", "collect"), stage("lam", "collect"),
             stage("evaluate@baseline-0", "finetune@baseline-0"), stage("extract", "collect", "lam"),
             stage("finetune@la_tok-0", "extract"), stage("evaluate@la_tok-0", "finetune@la_tok-0"),
             stage("report", "evaluate@baseline-0", "evaluate@la_tok-0")]
    order = [s.name for s in submission_order(graph)]
    assert order == ["collect", "lam", "finetune@baseline-0", "extract", "evaluate@baseline-0", "finetune@la_tok-0",
                     "evaluate@la_tok-0", "report"]
    position = {name: i for i, name in enumerate(order)}
    assert all(position[u] < position[s.name] for s in graph for u in s.upstream)


class FakeState:
    def __init__(self, ok: bool) -> None:
        self.ok, self.name = ok, "Completed" if ok else "Failed"

    def is_completed(self) -> bool:
        return self.ok


class FakeRunner:
    """Futures that finish in submission order (`first_done` takes the oldest running); `fails`: stages that fail."""

    def __init__(self, fails: tuple[str, ...] = ()) -> None:
        self.fails, self.submitted, self.running, self.peak, self.running_at_wait = fails, [], [], 0, []

    def submit(self, stage: object) -> object:
        future = type("Future", (), {"stage": stage.name, "state": FakeState(stage.name not in self.fails)})()
        self.submitted.append(stage.name)
        self.running.append(future)
        self.peak = max(self.peak, len(self.running))
        return future

    def first_done(self, futures: list) -> object:
        self.running_at_wait.append(sorted(f.stage for f in futures))
        done = self.running.pop(0)
        assert done in futures
        return done


def stage(name: str, *upstream: str):
    from common.dvc_graph import StageInfo

    return StageInfo(name=name, cmd="true", upstream=upstream, deps=(), outs=(), locked_params={}, current_params={})


def test_ready_stages_take_free_slots_in_priority_order_never_more_than_the_capacity() -> None:
    from flows.study import run_ready_first

    runner = FakeRunner()
    states = run_ready_first([stage(f"s{i}") for i in range(6)], 2, runner.submit, runner.first_done)
    assert runner.submitted == [f"s{i}" for i in range(6)] and runner.peak == 2
    assert all(state.is_completed() for state in states.values()) and len(states) == 6


def test_a_stage_is_submitted_only_once_its_upstream_completed() -> None:
    """No thread or worker waits on another stage: a slot stays free rather than go to a stage that cannot start."""
    from flows.study import run_ready_first

    graph = [stage("collect"), stage("lam", "collect"), stage("finetune@baseline-0", "collect"),
             stage("extract", "lam"), stage("report", "extract", "finetune@baseline-0")]
    runner = FakeRunner()
    run_ready_first(graph, 2, runner.submit, runner.first_done)
    assert runner.running_at_wait[0] == ["collect"]  # two slots, one stage ready
    assert runner.running_at_wait[1] == ["finetune@baseline-0", "lam"]  # both freed stages, the long chain first
    assert runner.submitted == ["collect", "lam", "finetune@baseline-0", "extract", "report"]


def test_stages_downstream_of_a_failure_do_not_run_and_the_others_do() -> None:
    from flows.study import NOT_RUN, run_ready_first

    graph = [stage("ok"), stage("boom"), stage("after", "boom"), stage("later", "after"), stage("beside", "ok")]
    runner = FakeRunner(fails=("boom",))
    states = run_ready_first(graph, 1, runner.submit, runner.first_done)
    assert runner.submitted == ["ok", "boom", "beside"]
    assert states["after"] == states["later"] == NOT_RUN and not states["boom"].is_completed()
    assert states["ok"].is_completed() and states["beside"].is_completed()
