"""Expert rollouts in worker processes, scheduled so that the output does not depend on timing.

Each task tries layouts 0, 1, 2, ... in order until it has enough successful episodes. Attempts are submitted in
waves (first exactly the number needed, then one more per failure) and their results are consumed in
submission order, so the same seed yields the same episodes in the same order with 1 or N workers.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import multiprocessing.util
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterator

import numpy as np

from common.demos.schema import Episode
from common.simulators import Scene, get_simulator, task_info


@dataclasses.dataclass(frozen=True)
class SimSpec:
    """Which scene a worker needs: a simulator's task rendered by some cameras at some size."""

    simulator: str  # a name `common.simulators.get_simulator` knows
    task: str
    cameras: tuple[str, ...]
    image_size: int


@dataclasses.dataclass(frozen=True)
class Job:
    """One expert attempt: a task on one layout."""

    sim: SimSpec
    layout_id: int
    max_steps: int
    seed: int

    @property
    def task(self) -> str:
        """The task's name in its simulator."""
        return self.sim.task


@dataclasses.dataclass(frozen=True)
class Attempt:
    """What one attempt produced; `episode` is set only when the expert succeeded."""

    job: Job
    success: bool
    steps: int
    episode: Episode | None


@dataclasses.dataclass(frozen=True)
class TaskFacts:
    """What the simulator says about a task before collection: control rate and held-out layouts."""

    task: str
    control_hz: float
    heldout: list[dict]


# Per worker process: one simulator per task, built on first use and kept, since building one (model compile
# plus a GL context) costs about a second.
_sims: dict[SimSpec, Scene] = {}


def _close_simulators() -> None:
    for sim in _sims.values():
        sim.close()
    _sims.clear()


def _simulator(spec: SimSpec) -> Scene:
    if not _sims:
        # Close GL contexts while the process is still whole: EGL objects finalised during interpreter
        # teardown raise noisy errors.
        multiprocessing.util.Finalize(None, _close_simulators, exitpriority=100)
    if spec not in _sims:
        _sims[spec] = get_simulator(spec.simulator).scene(spec.task, spec.cameras, spec.image_size)
    return _sims[spec]


def probe_task(spec: SimSpec, seed: int, heldout: int) -> TaskFacts:
    """Read the task's control rate and draw its held-out layouts (from a pool no demo uses)."""
    sim = _simulator(spec)
    layouts = [
        {"pool": "heldout", "layout_id": i, "layout": sim.draw_layout(seed, "heldout", i).tolist()}
        for i in range(heldout)
    ]
    return TaskFacts(spec.task, sim.control_hz, layouts)


def run_expert(job: Job) -> Attempt:
    """Roll out the scripted expert on one layout, recording (observation, action) until success."""
    warnings.filterwarnings("ignore", message="Constant\\(s\\) may be too high")  # the env clips by design
    simulator = get_simulator(job.sim.simulator)
    sim = _simulator(job.sim)
    layout = sim.draw_layout(job.seed, "demos", job.layout_id)
    obs = sim.reset(layout)
    policy = simulator.expert(job.task)
    if policy is None:
        raise ValueError(f"simulator {simulator.name!r} has no scripted expert for {job.task!r}; collect needs one")
    low, high = np.array(simulator.action_space.low), np.array(simulator.action_space.high)
    frames: dict[str, list[np.ndarray]] = {c: [] for c in job.sim.cameras}
    proprio: dict[str, list[np.ndarray]] = {k: [] for k in simulator.proprio_keys}
    actions, success_flags = [], []
    success = False
    for _ in range(job.max_steps):
        for camera, image in sim.render().items():
            frames[camera].append(image)
        for key, value in sim.proprio(obs).items():
            proprio[key].append(value)
        action = np.clip(policy.get_action(obs), low, high).astype(np.float32)  # what the env applies
        obs, success, _ = sim.step(action)
        actions.append(action)
        success_flags.append(success)
        if success:
            break
    steps = len(actions)
    if not success:
        return Attempt(job, False, steps, None)  # failed episodes are dropped: don't ship their frames
    dones = np.zeros(steps, dtype=bool)
    dones[-1] = True
    episode = Episode(
        task=job.task,
        instruction=task_info(simulator, job.task).instruction,
        layout_id=job.layout_id,
        layout=layout,
        split="train",  # decided by the scheduler, which knows how many successes came before
        actions=np.stack(actions),
        proprio={k: np.stack(v) for k, v in proprio.items()},
        images={c: np.stack(v) for c, v in frames.items()},
        success=np.array(success_flags, dtype=bool),
        dones=dones,
    )
    return Attempt(job, True, steps, episode)


@dataclasses.dataclass
class TaskTally:
    """Per-task bookkeeping of attempts and kept episodes."""

    attempts: int = 0
    successes: int = 0
    next_layout: int = 0
    lengths: list[int] = dataclasses.field(default_factory=list)


def start_workers(workers: int) -> ProcessPoolExecutor:
    """Simulator worker processes, started fresh ("spawn"): no GL or torch state inherited from a fork."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def collect_attempts(
    pool: ProcessPoolExecutor,
    tasks: list[str],
    needed: int,
    max_attempts: int,
    make_job: Callable[[str, int], Job],
    tallies: dict[str, TaskTally],
) -> Iterator[Attempt]:
    """Yield attempts in a deterministic order until every task has `needed` successes (or runs out)."""
    while True:
        wave = []
        for task in tasks:
            tally = tallies[task]
            for _ in range(max(0, min(needed - tally.successes, max_attempts - tally.attempts))):
                wave.append(make_job(task, tally.next_layout))
                tally.next_layout += 1
                tally.attempts += 1
        if not wave:
            return
        for attempt in pool.map(run_expert, wave):
            tally = tallies[attempt.job.task]
            if attempt.success:
                tally.successes += 1
                tally.lengths.append(attempt.steps)
            yield attempt
