"""`collect_pretrain`: scripted-expert demonstrations of the MT50 tasks outside the study, for `pretrain`.

The task list is computed, never typed: every MT50 task that is not in `collect.tasks`, minus `exclude`. No study
task's demonstrations or layouts can enter it; its camera, image size and episode length are the study's (read
from the `collect` section), so the pretrained backbone sees the images fine-tuning shows it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from common.collection import CollectParams
from common.config import Problem
from common.tasks import MT50

STAGE = "collect_pretrain"
DEMOS = Path("data/pretrain/demos.hdf5")  # cached by DVC
METRICS = Path("metrics/collect_pretrain.json")  # small, tracked in git
OUTS = (DEMOS,)
CODE = ("common/collection", "common/cpu.py", "common/demos", "common/sim.py", "common/tasks.py",
        "stages/collect_pretrain")
STUDY_SECTION = "collect"  # the study's tasks (excluded), cameras, image size and episode length


@dataclasses.dataclass(frozen=True)
class Params:
    """The `collect_pretrain` section of params.yaml."""

    exclude: list[str]  # MT50 tasks left out besides the study's (e.g. an expert too weak to demonstrate them)
    max_tasks: int  # at most this many of the remaining tasks, in the MT50 table's order (0: every one)
    demos_per_task: int  # successful training episodes per task
    val_demos_per_task: int  # further episodes per task, split "val" (pretrain's held-out L1)
    max_attempts_per_task: int  # a task whose expert falls short keeps what it has (logged, in the metrics)
    seed: int  # layout seed; must differ from collect.seed
    workers: int  # simulator processes

    def problems(self) -> list[Problem]:
        """Range checks (the task list is checked against the study in `collection`)."""
        out = [Problem(f"exclude[{i}]", t, "not a Meta-World MT50 task", "use a name from common/tasks.py")
               for i, t in enumerate(self.exclude) if t not in MT50]
        if self.max_tasks < 0:
            out.append(Problem("max_tasks", self.max_tasks, "must not be negative", "0 (every task) or e.g. 2"))
        for name in ("demos_per_task", "workers"):
            if getattr(self, name) < 1:
                out.append(Problem(name, getattr(self, name), "must be at least 1", "use a positive integer"))
        if self.val_demos_per_task < 0:
            out.append(Problem("val_demos_per_task", self.val_demos_per_task, "must not be negative", "use 0 or more"))
        return out


def pretrain_tasks(study_tasks: list[str], exclude: list[str], max_tasks: int) -> list[str]:
    """The MT50 tasks outside the study's list and `exclude`, in the table's order (the first max_tasks if > 0)."""
    tasks = [t for t in MT50 if t not in study_tasks and t not in exclude]
    return tasks[:max_tasks] if max_tasks else tasks


def collection(params: Params, study: CollectParams) -> tuple[CollectParams, list[Problem]]:
    """What to collect, with the study's cameras, image size and episode length; problems if it could touch the
    study (a shared layout seed) or has nothing to collect."""
    tasks = pretrain_tasks(study.tasks, params.exclude, params.max_tasks)
    problems = []
    if params.seed == study.seed:
        problems.append(Problem(f"{STAGE}.seed", params.seed, f"equals {STUDY_SECTION}.seed",
                                f"use another seed (e.g. {study.seed + 1000}) so no layout draw repeats the study's"))
    if not tasks:
        problems.append(Problem(f"{STAGE}.exclude", params.exclude, "leaves no MT50 task outside the study",
                                "exclude fewer tasks"))
    chosen = CollectParams(tasks=tasks or list(study.tasks), demos_per_task=params.demos_per_task,
                           val_demos_per_task=params.val_demos_per_task, heldout_layouts_per_task=0,
                           max_attempts_per_task=params.max_attempts_per_task,
                           max_episode_steps=study.max_episode_steps, cameras=list(study.cameras),
                           image_size=study.image_size, seed=params.seed, workers=params.workers)
    problems += [dataclasses.replace(p, field=f"{STAGE}.{p.field}") for p in chosen.problems()]
    return chosen, problems
