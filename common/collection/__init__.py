"""Scripted-expert demonstrations: roll out a simulator's experts and write the successful episodes to a file.

Shared by the stages that collect demonstrations (`collect` for the study's tasks, `collect_pretrain` for the
simulator's tasks outside them); each stage owns its params section, output paths and tracking run. Which
simulator (common/simulators) is a params value, recorded in the dataset as its `env`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import remove_stale_partials
from common.collection.rollout import Job, SimSpec, TaskTally, collect_attempts, probe_task, start_workers
from common.config import Problem
from common.demos import DatasetMeta, DemoWriter
from common.logs import progress
from common.simulators import get_simulator, known_simulators, task_info

log = logging.getLogger(__name__)


class CollectionError(RuntimeError):
    """The experts could not produce the demonstrations asked for; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class CollectParams:
    """What to collect (the `collect` section of params.yaml; `collect_pretrain` builds one from its own)."""

    simulator: str  # a simulator in common/simulators, e.g. metaworld
    tasks: list[str]  # the simulator's task names, e.g. drawer-open-v3
    demos_per_task: int  # successful training episodes per task, each on its own layout
    val_demos_per_task: int  # further episodes per task on other layouts, split "val" for held-out metrics
    heldout_layouts_per_task: int  # layouts never demonstrated, recorded for evaluation
    max_attempts_per_task: int  # expert rollouts allowed per task before giving up
    max_episode_steps: int
    cameras: list[str]  # first a fixed third-person view, then the wrist camera
    image_size: int  # square images, pixels
    seed: int
    workers: int  # simulator processes, one environment each

    def problems(self) -> list[Problem]:
        """Range and consistency checks beyond the types."""
        try:
            sim = get_simulator(self.simulator)
        except ValueError:
            return [Problem("simulator", self.simulator, "names no simulator", f"use one of {known_simulators()}")]
        out = []
        for i, task in enumerate(self.tasks):
            if task not in sim.tasks:
                out.append(Problem(f"tasks[{i}]", task, f"not a {sim.name} task",
                                   f"use a task of common/simulators/{sim.name}"))
        if len(set(self.tasks)) != len(self.tasks):
            out.append(Problem("tasks", self.tasks, "lists a task twice", "list each task once"))
        if not self.tasks:
            out.append(Problem("tasks", self.tasks, "is empty", "list at least one task"))
        for name in ("demos_per_task", "image_size", "workers", "max_episode_steps"):
            if getattr(self, name) < 1:
                out.append(Problem(name, getattr(self, name), "must be at least 1", "use a positive integer"))
        for name in ("val_demos_per_task", "heldout_layouts_per_task"):
            if getattr(self, name) < 0:
                out.append(Problem(name, getattr(self, name), "must not be negative", "use 0 or more"))
        needed = self.demos_per_task + self.val_demos_per_task
        if self.max_attempts_per_task < needed:
            out.append(
                Problem("max_attempts_per_task", self.max_attempts_per_task, f"is below the {needed} demos needed",
                        f"allow at least {needed} (about 1.5x that leaves room for expert failures)")
            )
        if self.max_episode_steps > sim.max_episode_steps:
            out.append(
                Problem("max_episode_steps", self.max_episode_steps, f"{sim.name} stops at {sim.max_episode_steps}",
                        f"use {sim.max_episode_steps} or less")
            )
        for i, camera in enumerate(self.cameras):
            if camera not in sim.cameras:
                out.append(Problem(f"cameras[{i}]", camera, f"not a {sim.name} camera",
                                   f"use one of {list(sim.cameras)}"))
        if len(set(self.cameras)) != len(self.cameras) or not self.cameras:
            out.append(Problem("cameras", self.cameras, "must be non-empty and distinct", "e.g. [corner, gripperPOV]"))
        return out


def dataset_meta(params: CollectParams, heldout: dict[str, list[dict[str, Any]]], rate_hz: float,
                 code_version: str) -> DatasetMeta:
    """The file-level metadata that downstream stages read instead of retyping settings."""
    sim = get_simulator(params.simulator)
    return DatasetMeta(
        env=sim.name,
        env_version=sim.version(),
        cameras=tuple(params.cameras),
        image_size=(params.image_size, params.image_size),
        image_origin="upright",
        action_space=sim.action_space,
        proprio_keys=sim.proprio_keys,
        proprio_dim=sim.proprio_dim,
        control_hz=rate_hz,
        collection_seed=params.seed,
        code_version=code_version,
        tasks=tuple(params.tasks),
        heldout_layouts=heldout,
        extra={
            "instructions": {t: task_info(sim, t).instruction for t in params.tasks},
            "categories": {t: list(task_info(sim, t).categories) for t in params.tasks},
            "split_rule": "per task, the first demos_per_task successes (by layout id) are train, the rest val",
        },
    )


def summarize(tallies: dict[str, TaskTally]) -> dict[str, Any]:
    """Expert success rates and episode counts: deterministic, so the metrics file's hash is reproducible."""
    per_task = {
        task: {
            "attempts": t.attempts,
            "successes": t.successes,
            "expert_success_rate": round(t.successes / t.attempts, 4),
            "mean_length": round(float(np.mean(t.lengths)), 2) if t.lengths else 0.0,
            "max_length": int(max(t.lengths, default=0)),
        }
        for task, t in tallies.items()
    }
    attempts = sum(t.attempts for t in tallies.values())
    successes = sum(t.successes for t in tallies.values())
    return {
        "expert_success_rate": round(successes / attempts, 4),
        "episodes": successes,
        "steps": int(sum(sum(t.lengths) for t in tallies.values())),
        "tasks": per_task,
    }


def check_layouts_distinct(heldout: dict[str, list[dict[str, Any]]], used: dict[str, list[np.ndarray]]) -> None:
    """Every demonstrated and held-out layout of a task must differ from every other one."""
    for task, layouts in used.items():
        rows = np.array([*layouts, *(h["layout"] for h in heldout[task])])
        if len(np.unique(rows, axis=0)) != len(rows):
            raise CollectionError(f"task {task}: two layouts coincide; change the collection seed")


def collect_demos(params: CollectParams, demos_path: Path, code_version: str,
                  require_all: bool = True) -> tuple[dict[str, Any], float]:
    """Collect the demonstrations into `demos_path`; (summary metrics, wall seconds).

    A task whose expert reaches fewer than demos + val successes within its attempts fails the collection under
    `require_all`; otherwise it keeps the episodes it has and is listed under "short_tasks" with the reason.
    """
    for stale in remove_stale_partials(demos_path):
        log.info("removed %s left by a killed run", stale)
    needed = params.demos_per_task + params.val_demos_per_task
    specs = {task: SimSpec(params.simulator, task, tuple(params.cameras), params.image_size) for task in params.tasks}
    tallies = {task: TaskTally() for task in params.tasks}
    used_layouts: dict[str, list[np.ndarray]] = {task: [] for task in params.tasks}
    make_job = lambda task, layout_id: Job(specs[task], layout_id, params.max_episode_steps, params.seed)  # noqa: E731

    with start_workers(params.workers) as pool:
        started = time.perf_counter()
        facts = list(pool.map(probe_task, specs.values(), [params.seed] * len(specs),
                              [params.heldout_layouts_per_task] * len(specs)))
        rates = {f.control_hz for f in facts}
        if len(rates) != 1:
            raise CollectionError(f"the tasks {params.tasks} run at different control rates {sorted(rates)} (Hz)")
        heldout = {f.task: f.heldout for f in facts}
        meta = dataset_meta(params, heldout, rates.pop(), code_version)
        with DemoWriter(demos_path, meta) as writer, progress(total=needed * len(params.tasks), desc="demos") as bar:
            for attempt in collect_attempts(pool, params.tasks, needed, params.max_attempts_per_task, make_job,
                                            tallies):
                attempts_so_far = sum(t.attempts for t in tallies.values())
                bar.set_postfix(task=attempt.job.task, attempts=attempts_so_far, refresh=False)
                if attempt.episode is None:
                    log.info("expert failed on %s layout %d", attempt.job.task, attempt.job.layout_id)
                    continue
                split = "train" if tallies[attempt.job.task].successes <= params.demos_per_task else "val"
                writer.add(dataclasses.replace(attempt.episode, split=split))
                used_layouts[attempt.job.task].append(attempt.episode.layout)
                bar.update()
            short = {t: x.successes for t, x in tallies.items() if x.successes < needed}
            if short and require_all:  # raising inside the writer's block deletes the partial file
                raise CollectionError(
                    f"the expert reached fewer than {needed} successes within {params.max_attempts_per_task} "
                    f"attempts for {short}. Next step: raise max_attempts_per_task or drop the task"
                )
            for task, successes in short.items():
                log.warning("%s: the expert succeeded %d times in %d attempts (%d wanted); keeping those episodes",
                            task, successes, params.max_attempts_per_task, needed)
            check_layouts_distinct(heldout, used_layouts)
        wall = time.perf_counter() - started
    metrics = summarize(tallies)
    if not require_all:
        metrics["short_tasks"] = {t: f"{n} of {needed} successes in {params.max_attempts_per_task} attempts"
                                  for t, n in short.items()}
    return metrics, wall
