"""Run the DVC stage graph as a Prefect flow: one task per stage, in parallel where the graph allows.

dvc.yaml stays the only DAG: the flow reads it through DVC's API (`common.dvc_graph`) and each task runs
`dvc --wait-for-lock repro --single-item <stage>`, so DVC still decides what is stale, caches outputs and
writes dvc.lock. The flow adds parallelism (a task runner with a concurrency limit), retries, one MLflow
parent run per execution with a child run per stage tagged with its dvc.lock entry, and a final `dvc status`
that must be clean. A stage that fails, after its retries, fails the flow; stages downstream of it do not run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import flows  # noqa: F401  (Prefect's offline settings, before Prefect is imported)
from common.config import load_section
from common.dvc_graph import StageInfo, read_stages, with_upstream
from common.tracking import PARENT_RUN_ENV, TrackingParams, close_run, open_study_run, record_stage_lineage

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
    max_parallel: int  # stages running at once (threads: `Slots`; Dask/Ray: the worker count)
    retries: int  # extra attempts for a failed stage
    retry_delay_s: float
    runner: RunnerKind
    address: str | None  # an existing Dask scheduler / Ray cluster; None starts a local one

    def __post_init__(self) -> None:
        if self.max_parallel < 1:
            raise FlowError(f"--max-parallel {self.max_parallel}: must be at least 1")
        if self.retries < 0 or self.retry_delay_s < 0:
            raise FlowError(f"--retries {self.retries} / --retry-delay {self.retry_delay_s}: must not be negative")


class Slots:
    """At most `capacity` holders at once; a freed slot goes to the waiting holder with the lowest priority number.

    With the thread runner every stage gets a thread of its own, which waits for its upstream stages without taking
    a slot: a slot is taken only once the stage can run, so no core idles behind a stage that waits (Prefect's own
    limit, the pool size, counts waiting tasks too), and ready stages start in submission order.
    """

    def __init__(self, capacity: int) -> None:
        self._free = capacity
        self._waiting: list[int] = []
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, priority: int) -> Iterator[None]:
        """Wait for a slot (lower priority numbers first), hold it for the block."""
        with self._changed:
            heapq.heappush(self._waiting, priority)
            self._changed.wait_for(lambda: self._free > 0 and self._waiting[0] == priority)
            heapq.heappop(self._waiting)
            self._free -= 1
            self._changed.notify_all()  # the next waiter may take a slot still free
        try:
            yield
        finally:
            with self._changed:
                self._free += 1
                self._changed.notify_all()


_SLOTS: Slots | None = None  # the thread runner's concurrency limit, for the flow running in this process


def make_task_runner(runner: RunnerKind, max_parallel: int, address: str | None = None) -> Any:
    """The Prefect task runner: threads on this machine, or Dask/Ray workers sharing this filesystem.

    Threads: one per submitted stage (started on demand), limited to `max_parallel` running stages by `Slots`.
    Dask/Ray: the workers are the limit (`max_parallel` of them unless `address` names a cluster).
    """
    if runner == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=sys.maxsize)  # unbounded whatever Prefect's settings say
    if runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise FlowError("--runner dask needs prefect-dask: `pip install -c constraints.txt prefect-dask`") from None
        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": max_parallel, "threads_per_worker": 1})
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


def repro_stage(stage: str, root: str, parent_run_id: str | None, priority: int = 0) -> None:
    """Prefect task body: `dvc --wait-for-lock repro --single-item <stage>` (in a slot of the thread runner's limit,
    `priority` = submission position)."""
    with _SLOTS.hold(priority) if _SLOTS is not None else contextlib.nullcontext():
        _repro(stage, root, parent_run_id)


def _repro(stage: str, root: str, parent_run_id: str | None) -> None:
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


def _study(root: str, targets: tuple[str, ...], retries: int, retry_delay_s: float) -> dict[str, str]:
    """The flow body: the parent MLflow run around `_execute`, closed FAILED if anything goes wrong."""
    from prefect import get_run_logger

    stages = read_stages(Path(root))
    stages = with_upstream(stages, list(targets)) if targets else stages
    tracking = load_section(Path(root) / "params.yaml", "tracking", TrackingParams)
    parent = open_study_run(tracking, Path(root), "study", {
        "study.flow": FLOW_NAME, "study.stages": ",".join(s.name for s in stages)[:5000]})
    get_run_logger().info("%d stage(s): %s; MLflow parent run %s", len(stages), [s.name for s in stages], parent)
    try:
        states = _execute(root, stages, targets, retries, retry_delay_s, parent, tracking)
    except BaseException:
        close_run(tracking, Path(root), parent, failed=True)
        raise
    close_run(tracking, Path(root), parent, failed=False)
    return states


def submission_order(stages: list[StageInfo]) -> list[StageInfo]:
    """Stages by depth (longest chain of upstream stages), and within a depth those with more stages downstream of
    them first, then by name.

    Task runners start submitted tasks first come, first served, and (Dask, Ray) a started task holds its worker
    while it waits for its upstream tasks; the thread runner's `Slots` grant ready stages a slot in this order.
    Submitting by depth means every upstream task has started before a worker takes its consumers (no worker
    waits on a task still queued behind it), and the many-descendant stages of a depth (the LAM and the tokenizer)
    start before the one-descendant ones (the baseline's training), so the long chain of the study is not queued
    behind the stages beside it.
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


def _execute(root: str, stages: list[StageInfo], targets: tuple[str, ...], retries: int, retry_delay_s: float,
             parent: str | None, tracking: TrackingParams) -> dict[str, str]:
    """Submit every stage after its upstream stages, wait, report failures, then require a clean `dvc status`."""
    from prefect import get_run_logger, task
    from prefect.futures import wait

    futures: dict[str, Any] = {}
    for position, stage in enumerate(submission_order(stages)):  # upstream futures exist before their consumers
        runner = task(repro_stage, name=f"repro {stage.name}", retries=retries, retry_delay_seconds=retry_delay_s)
        futures[stage.name] = runner.submit(stage.name, root, parent, position,
                                            wait_for=[futures[u] for u in stage.upstream])
    wait(list(futures.values()))
    states = {name: future.state for name, future in futures.items()}
    failed = {name: state for name, state in states.items() if not state.is_completed()}
    if parent is not None:  # the stages that completed keep their record even when others failed
        record_lineage(Path(root), [name for name in states if name not in failed], parent, tracking)
    if failed:
        details = "\n".join(f"  - {name}: " + ("not run: an upstream stage did not complete" if state.name == "NotReady"
                                                 else f"{state.name}: {state.message or ''}".rstrip())
                            for name, state in failed.items())
        raise FlowError(f"{len(failed)} of {len(states)} stage(s) did not complete:\n{details}\n"
                        "Fix the first failure, then rerun: finished stages are cached and will not run again.")
    status = dvc_status(Path(root), targets)
    if status:
        raise FlowError(f"every stage ran, yet `dvc status` is not clean: {json.dumps(status)[:2000]}")
    get_run_logger().info("all %d stage(s) up to date; `dvc status` is clean", len(stages))
    return {name: state.name for name, state in states.items()}


def run_study(options: FlowOptions) -> dict[str, str]:
    """Execute the graph with the chosen task runner; raises FlowError if any stage fails."""
    from prefect import flow

    global _SLOTS
    if options.targets:  # an unknown stage fails now, not after the Prefect server has started
        with_upstream(read_stages(options.root), list(options.targets))
    runner = make_task_runner(options.runner, options.max_parallel, options.address)
    study = flow(_study, name=FLOW_NAME, task_runner=runner, log_prints=True)
    _SLOTS = Slots(options.max_parallel) if options.runner == "thread" else None
    try:
        return study(str(options.root.resolve()), options.targets, options.retries, options.retry_delay_s)
    finally:
        _SLOTS = None
