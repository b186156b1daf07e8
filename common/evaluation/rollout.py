"""Closed-loop rollouts: the policy in this process, the environments in workers, inference batched across them.

Up to `slots` episodes run at once, at most ceil(slots / tasks) of one task, each in a lane: (task, number), a
simulator that runs one episode after another, so a task's simulators are built once (a build costs about a
second) however many episodes it has. Episodes advance in lockstep rounds:
  1. each running episode receives one operation: start (reset to its layout and visual shift) or run the action
     chunk it was given (open-loop, up to the re-plan interval, stopping at success or the step limit);
  2. the episodes still running report their observations, and all go to the policy in one batched
     `Policy.act` call, in plan order;
  3. finished episodes free their lanes; free places take the next planned episodes whose task has a free lane.
Which episodes share a batch depends only on the plan, `slots` and the task count, never on the number of
workers or on timing, and each episode's randomness comes from its own seed: results are identical with 0, 1
or N workers. Each lane lives on one worker, the least loaded one when the lane is first used.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import numpy as np

from common.evaluation.worker import (
    EpisodeSpec,
    Lane,
    LocalWorker,
    ProcessWorker,
    Report,
    Run,
    SimSettings,
    Start,
    start_worker,
)
from common.policy import Observation, Policy, check_actions


@dataclasses.dataclass(frozen=True)
class EpisodeResult:
    """How one planned episode ended."""

    spec: EpisodeSpec
    success: bool
    steps: int
    steps_to_success: int | None
    failure: str | None  # None, "timeout" or "error"
    error: str | None
    frames: list[np.ndarray] | None  # video frames (H, W, 3) uint8, video episodes only


@dataclasses.dataclass
class RolloutStats:
    """Counters for throughput figures."""

    env_steps: int = 0
    rounds: int = 0
    policy_calls: int = 0
    policy_seconds: float = 0.0
    observations: int = 0


@dataclasses.dataclass
class _Running:
    spec: EpisodeSpec
    actions: np.ndarray | None = None  # the chunk to run next round; None: not started yet
    report: Report | None = None  # the last observation


class _Lanes:
    """Free lanes per task, and the worker each lane lives on."""

    def __init__(self, tasks: list[str], per_task: int, workers: int):
        self.free = {task: list(range(per_task)) for task in tasks}
        self.worker: dict[Lane, int] = {}
        self.load = [0] * workers  # running episodes per worker

    def take(self, task: str) -> Lane | None:
        """The lowest free lane of the task (placed on the least loaded worker when first used), or None."""
        if not self.free[task]:
            return None
        lane = (task, self.free[task].pop(0))
        if lane not in self.worker:
            self.worker[lane] = self.load.index(min(self.load))
        self.load[self.worker[lane]] += 1
        return lane

    def give_back(self, lane: Lane) -> None:
        """The lane's episode ended: it can take the task's next one."""
        self.free[lane[0]].append(lane[1])
        self.free[lane[0]].sort()
        self.load[self.worker[lane]] -= 1


def _observation(policy: Policy, slots: list[_Running]) -> Observation:
    """Stack the reports of the given episodes into one batch."""
    reports = [s.report for s in slots]
    return Observation(
        images={c: np.stack([r.images[c] for r in reports]) for c in policy.cameras},  # (B, H, W, 3)
        proprio=np.stack([r.proprio for r in reports]),  # (B, P)
        instructions=tuple(s.spec.instruction for s in slots),
        tasks=tuple(s.spec.task for s in slots),
        states=np.stack([r.state for r in reports]),  # (B, obs_dim)
    )


def run_episodes(
    policy: Policy,
    plan: list[EpisodeSpec],
    settings: SimSettings,
    replan_every: int,
    slots: int,
    workers: int,
    action_dim: int,
    on_done: Callable[[EpisodeResult], None] = lambda result: None,
    stats: RolloutStats | None = None,
) -> list[EpisodeResult]:
    """Run every planned episode closed-loop; results in plan order. `workers` 0 runs the simulators here."""
    stats = stats if stats is not None else RolloutStats()
    interval = min(replan_every, policy.chunk)
    tasks = list(dict.fromkeys(spec.task for spec in plan))
    lanes = _Lanes(tasks, math.ceil(slots / max(len(tasks), 1)), max(workers, 1))
    pool: list[LocalWorker | ProcessWorker] = [start_worker(settings, workers == 0) for _ in range(max(workers, 1))]
    queue = list(plan)
    active: dict[Lane, _Running] = {}
    results: dict[int, EpisodeResult] = {}
    try:
        while queue or active:
            for spec in list(queue):
                if len(active) >= slots:
                    break
                lane = lanes.take(spec.task)
                if lane is not None:
                    queue.remove(spec)
                    active[lane] = _Running(spec)
            ops: list[list[Start | Run]] = [[] for _ in pool]
            for lane, run in active.items():
                op = Start(lane, run.spec) if run.actions is None else Run(lane, run.actions[:interval])
                ops[lanes.worker[lane]].append(op)
            for worker, worker_ops in zip(pool, ops):
                if worker_ops:
                    worker.submit(worker_ops)
            for worker, worker_ops in zip(pool, ops):
                for report in worker.collect() if worker_ops else ():
                    run = active[report.lane]
                    if report.done:
                        del active[report.lane]
                        lanes.give_back(report.lane)
                        result = EpisodeResult(run.spec, report.success, report.steps, report.steps_to_success,
                                               report.failure, report.error, report.frames)
                        results[run.spec.index] = result
                        on_done(result)
                    else:
                        run.report = report
            stats.rounds += 1
            waiting = sorted(active.values(), key=lambda r: r.spec.index)
            if waiting:
                obs = _observation(policy, waiting)
                started = time.perf_counter()
                actions = check_actions(policy.act(obs), obs, policy.chunk, action_dim, type(policy).__name__)
                stats.policy_seconds += time.perf_counter() - started
                stats.policy_calls += 1
                stats.observations += len(waiting)
                for run, chunk in zip(waiting, actions):
                    run.actions = chunk
    finally:
        for worker in pool:
            worker.close()
    stats.env_steps += sum(r.steps for r in results.values())
    return [results[spec.index] for spec in plan]
