"""`collect`: roll out Meta-World's scripted experts and store the successful episodes as demonstrations."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from common.config import Problem
from common.sim import CAMERAS, MAX_EPISODE_STEPS
from common.tasks import MT50

STAGE = "collect"
DEMOS = Path("data/collect/demos.hdf5")  # cached by DVC
METRICS = Path("metrics/collect.json")  # small, tracked in git
OUTS = (DEMOS,)
# The code this stage's output depends on: dvc.yaml lists the same paths as deps, and the dataset records
# their fingerprint as its code version.
CODE = ("common/cpu.py", "common/demos", "common/sim.py", "common/tasks.py", "stages/collect")


@dataclasses.dataclass(frozen=True)
class Params:
    """The `collect` section of params.yaml."""

    tasks: list[str]  # Meta-World MT50 names, e.g. drawer-open-v3
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
        out = []
        for i, task in enumerate(self.tasks):
            if task not in MT50:
                out.append(
                    Problem(f"tasks[{i}]", task, "not a Meta-World MT50 task", "use a name from common/tasks.py")
                )
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
        if self.max_episode_steps > MAX_EPISODE_STEPS:
            out.append(
                Problem("max_episode_steps", self.max_episode_steps, f"Meta-World stops at {MAX_EPISODE_STEPS}",
                        f"use {MAX_EPISODE_STEPS} or less")
            )
        for i, camera in enumerate(self.cameras):
            if camera not in CAMERAS:
                out.append(Problem(f"cameras[{i}]", camera, "not a Meta-World camera", f"use one of {list(CAMERAS)}"))
        if len(set(self.cameras)) != len(self.cameras) or not self.cameras:
            out.append(Problem("cameras", self.cameras, "must be non-empty and distinct", "e.g. [corner, gripperPOV]"))
        return out
