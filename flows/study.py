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
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import flows  # noqa: F401  (Prefect's offline settings, before Prefect is imported)
from common import prefork
from common.config import ParamsError, load_section, read_yaml
from common.dvc_graph import StageInfo, read_stages, with_upstream
from common.study import SECTION, load_study
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
    prefork: bool  # run the stage commands in forks of a launcher that has imported the heavy libraries once

    def __post_init__(self) -> None:
        if self.max_parallel < 1:
            raise FlowError(f"--max-parallel {self.max_parallel}: must be at least 1")
        if self.retries < 0 or self.retry_delay_s < 0:
            raise FlowError(f"--retries {self.retries} / --retry-delay {self.retry_delay_s}: must not be negative")


class Slots:
    """At most `capacity` stages run at once; a free slot goes to the ready stage (every upstream stage finished) with
    the lowest priority number, whether or not its thread has asked for one yet.

    With the thread runner every stage gets a thread of its own, which waits for its upstream stages without taking
    a slot: a slot is taken only once the stage can run, so no core idles behind a stage that waits (Prefect's own
    limit, the pool size, counts waiting tasks too). When a stage finishes, the threads of the stages it held back are
    released together and race to ask; granting by arrival once let the baseline's training take the slot the LAM
    (the long chain) should have had. So stages are registered up front with their upstream stages, and a thread that
    asks waits while a ready stage ahead of it has not asked yet: at most `grace_s` after that stage became ready (its
    thread is on its way; one that never comes, say after a failure Prefect handles, holds nobody up for longer).
    """

    def __init__(self, capacity: int, grace_s: float = 5.0) -> None:
        self._free, self._grace_s = capacity, grace_s
        self._queued: dict[str, tuple[int, frozenset[str]]] = {}  # stages not run yet: priority, upstream stages
        self._ready_at: dict[str, float] = {}  # when each queued stage's last upstream stage finished
        self._asking: set[str] = set()  # queued stages whose thread waits in `hold`
        self._done: set[str] = set()
        self._changed = threading.Condition()

    def register(self, name: str, priority: int, upstream: tuple[str, ...]) -> None:
        """Queue a stage (before any stage runs); `upstream`: the stages of this flow it waits for."""
        with self._changed:
            self._queued[name] = (priority, frozenset(upstream))
            if self._queued[name][1] <= self._done:
                self._ready_at[name] = time.monotonic()

    def _next(self, now: float) -> str | None:
        """The stage a free slot goes to: the lowest priority among those asking and those ready for < grace_s."""
        candidates = [(priority, name) for name, (priority, _) in self._queued.items()
                      if name in self._asking or now - self._ready_at.get(name, -math.inf) < self._grace_s]
        return min(candidates)[1] if candidates else None

    @contextlib.contextmanager
    def hold(self, name: str) -> Iterator[None]:
        """Wait for a slot (see the class), hold it for the block. A stage that fails is queued again: its retry asks
        like any other stage."""
        with self._changed:
            if name not in self._queued:
                raise FlowError(f"stage {name} asked for a slot without being registered (or while it holds one)")
            self._asking.add(name)
            while not (self._free > 0 and self._next(time.monotonic()) == name):
                self._changed.wait(timeout=min(0.5, self._grace_s))  # a grace period ends without a notify
            self._asking.discard(name)
            entry = self._queued.pop(name)
            self._ready_at.pop(name, None)
            self._free -= 1
            self._changed.notify_all()  # the next stage may take a slot still free
        finished = False
        try:
            yield
            finished = True
        finally:
            with self._changed:
                self._free += 1
                if finished:
                    self._done.add(name)
                    now = time.monotonic()
                    for other, (_, upstream) in self._queued.items():
                        if other not in self._ready_at and upstream <= self._done:
                            self._ready_at[other] = now
                else:
                    self._queued[name] = entry  # eligible again when its retry asks
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


def stage_env(parent_run_id: str | None, launcher: str | None = None) -> dict[str, str]:
    """The stage command's environment: this interpreter's `python` and `dvc` first, the parent run's id, the
    pre-forking launcher's socket."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if parent_run_id:
        env[PARENT_RUN_ENV] = parent_run_id
    if launcher:
        env[prefork.SOCKET_ENV] = launcher
    return env


@contextlib.contextmanager
def prefork_launcher(root: Path, enabled: bool) -> Iterator[str | None]:
    """A `python -m common.prefork` process for the flow's duration; yields its socket (None: stages start afresh).

    A Dask or Ray worker on another machine cannot reach the socket, and its stages start afresh as well.
    """
    if not enabled or not prefork.available():
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="lasd-prefork-"))  # private (0700); a Unix socket path is short
    socket_path = folder / "socket"
    process = subprocess.Popen([sys.executable, "-m", "common.prefork", "--socket", str(socket_path),
                                "--parent", str(os.getpid())], cwd=root,
                               env=stage_env(None), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        yield str(socket_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def repro_stage(stage: str, root: str, parent_run_id: str | None, launcher: str | None) -> None:
    """Prefect task body: `dvc --wait-for-lock repro --single-item <stage>` (in a slot of the thread runner's limit)."""
    with _SLOTS.hold(stage) if _SLOTS is not None else contextlib.nullcontext():
        _repro(stage, root, parent_run_id, launcher)


def _repro(stage: str, root: str, parent_run_id: str | None, launcher: str | None) -> None:
    from prefect import get_run_logger

    logger = get_run_logger()
    command = [sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "--single-item", stage]
    logger.info("%s: %s", stage, " ".join(command[2:]))
    process = subprocess.Popen(command, cwd=root, env=stage_env(parent_run_id, launcher), stdout=subprocess.PIPE,
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


def _study(root: str, targets: tuple[str, ...], retries: int, retry_delay_s: float, launcher: str | None
           ) -> dict[str, str]:
    """The flow body: the parent MLflow run around `_execute`, closed FAILED if anything goes wrong."""
    from prefect import get_run_logger

    stages = read_stages(Path(root))
    stages = with_upstream(stages, list(targets)) if targets else stages
    tracking = load_section(Path(root) / "params.yaml", "tracking", TrackingParams)
    parent = open_study_run(tracking, Path(root), "study", {
        "study.flow": FLOW_NAME, "study.stages": ",".join(s.name for s in stages)[:5000]})
    get_run_logger().info("%d stage(s): %s; MLflow parent run %s", len(stages), [s.name for s in stages], parent)
    try:
        states = _execute(root, stages, targets, retries, retry_delay_s, parent, tracking, launcher)
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
             parent: str | None, tracking: TrackingParams, launcher: str | None) -> dict[str, str]:
    """Submit every stage after its upstream stages, wait, report failures, then require a clean `dvc status`."""
    from prefect import get_run_logger, task
    from prefect.futures import wait

    futures: dict[str, Any] = {}
    ordered = submission_order(stages)
    if _SLOTS is not None:
        for position, stage in enumerate(ordered):
            _SLOTS.register(stage.name, position, stage.upstream)
    for stage in ordered:  # upstream futures exist before their consumers
        runner = task(repro_stage, name=f"repro {stage.name}", retries=retries, retry_delay_seconds=retry_delay_s)
        futures[stage.name] = runner.submit(stage.name, root, parent, launcher,
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


def check_study(root: Path) -> None:
    """Every strategy name of the params file (study.items, strategy_cfg) is registered, before any stage runs: a
    typo would otherwise fail only its own items, after the LAM and the tokenizer have trained. A DVC project without
    a `study` section (a toy one) has nothing to check."""
    try:
        if SECTION in read_yaml(root / "params.yaml"):
            from common.vla.strategies import STRATEGIES

            load_study(root / "params.yaml", STRATEGIES)
    except ParamsError as exc:
        raise FlowError(str(exc)) from None


def run_study(options: FlowOptions) -> dict[str, str]:
    """Execute the graph with the chosen task runner; raises FlowError if any stage fails."""
    from prefect import flow

    global _SLOTS
    check_study(options.root)
    if options.targets:  # an unknown stage fails now, not after the Prefect server has started
        with_upstream(read_stages(options.root), list(options.targets))
    runner = make_task_runner(options.runner, options.max_parallel, options.address)
    study = flow(_study, name=FLOW_NAME, task_runner=runner, log_prints=True)
    _SLOTS = Slots(options.max_parallel) if options.runner == "thread" else None
    root = options.root.resolve()
    try:
        with prefork_launcher(root, options.prefork) as launcher:
            return study(str(root), options.targets, options.retries, options.retry_delay_s, launcher)
    finally:
        _SLOTS = None
