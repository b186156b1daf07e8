"""The Prefect flow over a toy DVC graph: two stages at once, lineage in MLflow, `dvc status` clean at the end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from common import prefork
from common.tracking import LOCK_OUT_TAG, TrackingParams, resolve_tracking_uri
from flows.study import FlowOptions, run_study
from tests.flows.toy import PROJECT, dvc, hand_over_files, init_repo, toy_repo, tracking_section


def test_independent_stages_run_concurrently_then_status_is_clean(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    root = toy_repo(tmp_path / "repo", sleep_s=4.0)
    monkeypatch.setenv("PYTHONPATH", str(PROJECT))  # the `join` stage imports common.tracking
    options = FlowOptions(root=root, targets=(), max_parallel=2, retries=0, retry_delay_s=0, runner="thread",
                          address=None, prefork=False)
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


def test_slots_cap_the_running_holders_and_serve_the_lowest_priority_first() -> None:
    import threading
    import time

    from flows.study import Slots

    slots, lock = Slots(2, grace_s=0), threading.Lock()
    running, peak, started = [0], [0], []
    release = threading.Event()
    for priority in range(6):
        slots.register(f"s{priority}", priority, ())

    def hold(priority: int) -> None:
        with slots.hold(f"s{priority}"):
            with lock:
                started.append(priority)
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            release.wait(5) if priority in (0, 1) else time.sleep(0.01)
            with lock:
                running[0] -= 1

    first = [threading.Thread(target=hold, args=(p,)) for p in (0, 1)]
    for thread in first:
        thread.start()
    while len(started) < 2:
        time.sleep(0.01)
    rest = [threading.Thread(target=hold, args=(p,)) for p in (5, 3, 4, 2)]  # queue while both slots are held
    for thread in rest:
        thread.start()
    time.sleep(0.2)
    assert sorted(started) == [0, 1]  # nobody got past the two holders
    release.set()
    for thread in first + rest:
        thread.join(5)
    assert started[2:] == [2, 3, 4, 5] and peak[0] == 2


def test_slots_keep_a_freed_slot_for_the_ready_stage_ahead_whose_thread_is_late() -> None:
    """The study's start: when `collect` ends, the baseline's thread may ask before the LAM's; the LAM still goes
    first (and the tokenizer second), as their priorities say."""
    import threading
    import time

    from flows.study import Slots

    slots, started = Slots(2, grace_s=5), []
    for priority, name in enumerate(("collect", "lam", "action_vq", "finetune@baseline-0")):
        slots.register(name, priority, () if name == "collect" else ("collect",))

    def run(name: str, delay: float) -> threading.Thread:
        def body() -> None:
            time.sleep(delay)
            with slots.hold(name):
                started.append(name)
                time.sleep(0.3)
        thread = threading.Thread(target=body)
        thread.start()
        return thread

    run("collect", 0).join(5)
    threads = [run("finetune@baseline-0", 0), run("lam", 0.2), run("action_vq", 0.4)]  # arrival order: reversed
    for thread in threads:
        thread.join(5)
    assert started == ["collect", "lam", "action_vq", "finetune@baseline-0"]


def test_slots_wait_for_an_absent_stage_only_for_the_grace_and_requeue_a_failed_one() -> None:
    import time

    import pytest

    from flows.study import FlowError, Slots

    slots = Slots(1, grace_s=0.3)
    slots.register("first", 0, ())  # ready, but its thread never asks
    slots.register("second", 1, ())
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="stage failed"):
        with slots.hold("second"):
            assert time.monotonic() - start >= 0.25  # it waited for `first`, then went ahead
            raise RuntimeError("stage failed")
    with slots.hold("second"):  # the retry asks again and gets the slot
        pass
    with pytest.raises(FlowError, match="without being registered"):
        with slots.hold("second"):  # finished: not queued any more
            pass


@pytest.mark.skipif(not prefork.available(), reason="the launcher forks only on Linux")
def test_with_prefork_a_stage_runs_in_a_fork_of_the_flows_launcher(tmp_path: Path) -> None:
    """The flow starts the launcher and hands its socket through `dvc repro` to `python -m <package>`: the stage finds
    torch imported already (it never imports it), and the launcher is gone when the flow returns."""
    main = ("import json, os, sys\nfrom pathlib import Path\nPath('out').mkdir(exist_ok=True)\n"
            "Path('out/seen.json').write_text(json.dumps({'torch': 'torch' in sys.modules, "
            "'socket': os.environ.get('LASD_PREFORK_SOCKET')}))\n")
    files = hand_over_files("toy", main)
    stages = {"seen": {"cmd": "python -m toy", "deps": ["toy"], "outs": ["out/seen.json"]}}
    root = init_repo(tmp_path / "repo", {"stages": stages}, {"tracking": tracking_section()}, files)
    options = FlowOptions(root=root, targets=(), max_parallel=1, retries=0, retry_delay_s=0, runner="thread",
                          address=None, prefork=True)
    assert run_study(options) == {"seen": "Completed"}
    seen = json.loads((root / "out/seen.json").read_text())
    assert seen == {"torch": True, "socket": None}  # forked from the launcher, which took the socket out of its env
    assert not _processes_in(root.resolve()), "the launcher outlived the flow"


def _processes_in(folder: Path) -> list[int]:
    """Pids of the processes whose working directory is `folder`."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")) == folder:
                pids.append(int(entry.name))
        except OSError:
            pass  # gone meanwhile, or not ours to read
    return pids
