"""Run the DVC stage graph as a Prefect flow: one task per stage, in parallel where the graph allows.

dvc.yaml stays the only DAG: the flow reads it through DVC's API (`common.dvc_graph`) and each task runs
`dvc --wait-for-lock repro --single-item <stage>`, so DVC still decides what is stale, caches outputs and
writes dvc.lock. The flow adds parallelism (a task runner with a concurrency limit), retries, one MLflow
parent run per execution with a child run per stage tagged with its dvc.lock entry, and a final `dvc status`
that must be clean. A stage that fails, after its retries, fails the flow; stages downstream of it do not run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import flows  # noqa: F401  (Prefect's offline settings, before Prefect is imported)
from common.config import ParamsError, load_section, read_yaml
from common.dvc_graph import StageInfo, read_stages, with_upstream
from common.study import SECTION, load_study
from common.study_runs import close_run, open_study_run, record_stage_lineage
from common.tracking import PARENT_RUN_ENV, TrackingParams

RunnerKind = Literal["thread", "dask", "ray"]
FLOW_NAME = "latent-action-study"
_TAIL_LINES = 40  # lines of a failed stage's output quoted in the error


class FlowError(RuntimeError):
    """The study flow failed; the message names the stages and what to do."""


@dataclasses.dataclass(frozen=True)
class FlowOptions:
    """How to execute the graph (none of it changes a result, so none of it lives in params.yaml)."""

    root: Path  # the DVC repository
    targets: tuple[str, ...]  # stages to bring up to date with everything upstream; empty: the whole graph
    max_parallel: int  # stages running at once (threads, or the local Dask/Ray cluster's workers)
    retries: int  # extra attempts for a failed stage
    retry_delay_s: float
    runner: RunnerKind
    address: str | None  # an existing Dask scheduler / Ray cluster; None starts a local one

    def __post_init__(self) -> None:
        if self.max_parallel < 1:
            raise FlowError(f"--max-parallel {self.max_parallel}: must be at least 1")
        if self.retries < 0 or self.retry_delay_s < 0:
            raise FlowError(f"--retries {self.retries} / --retry-delay {self.retry_delay_s}: must not be negative")


def make_task_runner(runner: RunnerKind, max_parallel: int, address: str | None = None) -> Any:
    """The Prefect task runner: threads on this machine, or Dask/Ray workers sharing this filesystem.

    `max_parallel` threads, or a local cluster of `max_parallel` Dask workers (one thread each) or Ray CPUs, unless
    `address` names a cluster. The flow never submits more stages at once than `max_parallel` (`run_ready_first`).
    """
    if runner == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=max_parallel)
    if runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise FlowError("--runner dask needs prefect-dask: `pip install -c constraints.txt prefect-dask`") from None
        if address:
            return DaskTaskRunner(address=address)
        # Local workers in this process: a task only waits on its `dvc repro` process, and a worker process would
        # start Prefect's task engine of its own (the smoke flow: 80 s with thread workers, 204 s with processes).
        return DaskTaskRunner(cluster_kwargs={"n_workers": max_parallel, "threads_per_worker": 1, "processes": False})
    if runner == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError:
            raise FlowError("--runner ray needs prefect-ray: `pip install -c constraints.txt prefect-ray`") from None
        return RayTaskRunner(address=address) if address else RayTaskRunner(init_kwargs={"num_cpus": max_parallel})
    raise FlowError(f"--runner {runner!r}: choose thread, dask or ray")


def stage_env(parent_run_id: str | None) -> dict[str, str]:
    """The stage command's environment: this interpreter's `python` and `dvc` first, the parent run's id."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if parent_run_id:
        env[PARENT_RUN_ENV] = parent_run_id
    return env


def repro_stage(stage: str, root: str, parent_run_id: str | None) -> None:
    """Prefect task body: `dvc --wait-for-lock repro --single-item <stage>`, its output in the task's log."""
    from prefect import get_run_logger

    logger = get_run_logger()
    command = [sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "--single-item", stage]
    logger.info("%s: %s", stage, " ".join(command[2:]))
    process = subprocess.Popen(command, cwd=root, env=stage_env(parent_run_id), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line.rstrip())
        logger.info("[%s] %s", stage, line.rstrip())
    if process.wait() != 0:
        tail = "\n".join(lines[-_TAIL_LINES:])
        raise FlowError(f"stage {stage}: `dvc repro --single-item {stage}` exited {process.returncode}:\n{tail}")


def record_lineage(root: Path, names: list[str], parent_run_id: str, tracking: TrackingParams) -> None:
    """Tag the child run of each named stage with its dvc.lock entry, from one read of the graph.

    Once at the end of the flow rather than after each stage: reading the graph holds DVC's repository lock, which
    every running `dvc repro` also needs before and after its command.
    """
    by_name = {s.name: s for s in read_stages(root)}
    for name in names:
        record_stage_lineage(tracking, root, parent_run_id, by_name[name])


def dvc_status(root: Path, targets: tuple[str, ...]) -> dict[str, Any]:
    """`dvc status --json` (with upstream stages when targets are given): {} when everything is up to date."""
    command = [sys.executable, "-m", "dvc", "--wait-for-lock", "status", "--json"]
    command += ["--with-deps", *targets] if targets else []
    done = subprocess.run(command, cwd=root, env=stage_env(None), capture_output=True, text=True)
    if done.returncode != 0:
        raise FlowError(f"`dvc status` failed in {root}:\n{done.stderr.strip()}")
    return json.loads(done.stdout or "{}")


def _study(root: str, targets: tuple[str, ...], retries: int, retry_delay_s: float, capacity: int) -> dict[str, str]:
    """The flow body: the parent MLflow run around `_execute`, closed FAILED if anything goes wrong."""
    from prefect import get_run_logger

    stages = read_stages(Path(root))
    stages = with_upstream(stages, list(targets)) if targets else stages
    tracking = load_section(Path(root) / "params.yaml", "tracking", TrackingParams)
    parent = open_study_run(tracking, Path(root), "study", {
        "study.flow": FLOW_NAME, "study.stages": ",".join(s.name for s in stages)[:5000]})
    get_run_logger().info("%d stage(s): %s; MLflow parent run %s", len(stages), [s.name for s in stages], parent)
    try:
        states = _execute(root, stages, targets, retries, retry_delay_s, parent, tracking, capacity)
    except BaseException:
        close_run(tracking, Path(root), parent, failed=True)
        raise
    close_run(tracking, Path(root), parent, failed=False)
    return states


def submission_order(stages: list[StageInfo]) -> list[StageInfo]:
    """Stages by depth (longest chain of upstream stages), and within a depth those with more stages downstream of
    them first, then by name.

`run_ready_first` gives a free slot to the first ready stage in this order: the many-descendant stages of a depth
    (the LAM and the tokenizer) start before the one-descendant ones (the baseline's training), so the long chain of
    the study is not queued behind the stages beside it.
    """
    by_name = {s.name: s for s in stages}
    depth: dict[str, int] = {}
    for stage in stages:  # graph order: upstream first
        depth[stage.name] = 1 + max((depth[u] for u in stage.upstream if u in by_name), default=-1)
    below: dict[str, set[str]] = {s.name: set() for s in stages}
    for stage in reversed(stages):  # downstream first
        for upstream in stage.upstream:
            if upstream in below:
                below[upstream] |= below[stage.name] | {stage.name}
    return sorted(stages, key=lambda s: (depth[s.name], -len(below[s.name]), s.name))


NOT_RUN = "NotRun"  # the state of a stage whose upstream stage did not complete


def run_ready_first(ordered: list[StageInfo], capacity: int, submit: Callable[[StageInfo], Any],
                    first_done: Callable[[list[Any]], Any]) -> dict[str, Any]:
    """Run the stages once each, at most `capacity` at once: whenever one is free, a slot goes to the first stage of
    `ordered` (priority order, upstream first) whose upstream stages in the list have all completed. A stage is
    submitted only when it can start, so no thread or worker waits on another stage. `submit(stage)` returns a
    future with a `.state`; `first_done(futures)` blocks until one of them has finished and returns it.

    Returns each stage's final state, `NOT_RUN` for a stage downstream of one that did not complete.
    """
    names = {s.name for s in ordered}
    waiting, running, states = list(ordered), {}, {}
    while waiting or running:
        for stage in list(waiting):
            upstream = [u for u in stage.upstream if u in names]
            if any(u in states and (states[u] == NOT_RUN or not states[u].is_completed()) for u in upstream):
                states[stage.name] = NOT_RUN
                waiting.remove(stage)
            elif len(running) < capacity and all(u in states for u in upstream):
                running[stage.name] = submit(stage)
                waiting.remove(stage)
        if running:
            done = first_done(list(running.values()))
            name = next(n for n, future in running.items() if future is done)
            states[name] = running.pop(name).state
    return states


def first_finished(futures: list[Any]) -> Any:
    """The first of the Prefect futures to finish, its final state fetched (`wait`) so that `.state` is final."""
    from prefect.futures import as_completed

    done = next(as_completed(futures))
    done.wait()
    return done


def _execute(root: str, stages: list[StageInfo], targets: tuple[str, ...], retries: int, retry_delay_s: float,
             parent: str | None, tracking: TrackingParams, capacity: int) -> dict[str, str]:
    """Run every stage after its upstream stages, report failures, then require a clean `dvc status`."""
    from prefect import get_run_logger, task

    runner = task(repro_stage, retries=retries, retry_delay_seconds=retry_delay_s)
    states = run_ready_first(
        submission_order(stages), capacity,
        lambda stage: runner.with_options(name=f"repro {stage.name}").submit(stage.name, root, parent),
        first_finished)
    failed = {name: state for name, state in states.items() if state == NOT_RUN or not state.is_completed()}
    if parent is not None:  # the stages that completed keep their record even when others failed
        record_lineage(Path(root), [name for name in states if name not in failed], parent, tracking)
    if failed:
        details = "\n".join(f"  - {name}: " + ("not run: an upstream stage did not complete" if state == NOT_RUN
                                                 else f"{state.name}: {state.message or ''}".rstrip())
                            for name, state in failed.items())
        raise FlowError(f"{len(failed)} of {len(states)} stage(s) did not complete:\n{details}\n"
                        "Fix the first failure, then rerun: finished stages are cached and will not run again.")
    status = dvc_status(Path(root), targets)
    if status:
        raise FlowError(f"every stage ran, yet `dvc status` is not clean: {json.dumps(status)[:2000]}")
    get_run_logger().info("all %d stage(s) up to date; `dvc status` is clean", len(stages))
    return {name: state.name for name, state in states.items()}


def check_study(root: Path) -> None:
    """Every strategy name of the params file (study.items, strategy_cfg) is registered, before any stage runs: a
    typo would otherwise fail only its own items, after the LAM and the tokenizer have trained. A DVC project without
    a `study` section (a toy one) has nothing to check."""
    try:
        data = read_yaml(root / "params.yaml")
        if SECTION in data:
            from common.vla.strategies import STRATEGIES

            load_study(root / "params.yaml", STRATEGIES, data)
    except ParamsError as exc:
        raise FlowError(str(exc)) from None


def run_study(options: FlowOptions) -> dict[str, str]:
    """Execute the graph with the chosen task runner; raises FlowError if any stage fails."""
    from prefect import flow

    check_study(options.root)
    if options.targets:  # an unknown stage fails now, not after the Prefect server has started
        with_upstream(read_stages(options.root), list(options.targets))
    runner = make_task_runner(options.runner, options.max_parallel, options.address)
    study = flow(_study, name=FLOW_NAME, task_runner=runner, log_prints=True)
    root = options.root.resolve()
    return study(str(root), options.targets, options.retries, options.retry_delay_s, options.max_parallel)
