"""`collect_pretrain`: scripted-expert demonstrations of the simulator's tasks outside the study, for `pretrain`.

The task list is computed, never typed: every task of the study's simulator (MT50 for Meta-World) that is not in
`collect.tasks`, minus `exclude`. No study task's demonstrations or layouts can enter it; its simulator, camera,
image size and episode length are the study's (read from the `collect` section), so the pretrained backbone sees
the images fine-tuning shows it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from common.collection import CollectParams
from common.config import Problem
from common.simulators import get_simulator

STAGE = "collect_pretrain"
DEMOS = Path("data/pretrain/demos.hdf5")  # cached by DVC
METRICS = Path("metrics/collect_pretrain.json")  # small, tracked in git
OUTS = (DEMOS,)
CODE = ("common/collection", "common/cpu.py", "common/demos", "common/simulators", "stages/collect_pretrain")
STUDY_SECTION = "collect"  # the study's simulator, tasks (excluded), cameras, image size and episode length


@dataclasses.dataclass(frozen=True)
class Params:
    """The `collect_pretrain` section of params.yaml."""

    exclude: list[str]  # tasks left out besides the study's (e.g. an expert too weak to demonstrate them)
    max_tasks: int  # at most this many of the remaining tasks, in the simulator's task order (0: every one)
    demos_per_task: int  # successful training episodes per task
    val_demos_per_task: int  # further episodes per task, split "val" (pretrain's held-out L1)
    max_attempts_per_task: int  # a task whose expert falls short keeps what it has (logged, in the metrics)
    seed: int  # layout seed; must differ from collect.seed
    workers: int  # simulator processes

    def problems(self) -> list[Problem]:
        """Range checks (the task names are checked against the study's simulator in `collection`)."""
        out = []
        if self.max_tasks < 0:
            out.append(Problem("max_tasks", self.max_tasks, "must not be negative", "0 (every task) or e.g. 2"))
        for name in ("demos_per_task", "workers"):
            if getattr(self, name) < 1:
                out.append(Problem(name, getattr(self, name), "must be at least 1", "use a positive integer"))
        if self.val_demos_per_task < 0:
            out.append(Problem("val_demos_per_task", self.val_demos_per_task, "must not be negative", "use 0 or more"))
        return out


def pretrain_tasks(all_tasks: list[str], study_tasks: list[str], exclude: list[str], max_tasks: int) -> list[str]:
    """The tasks outside the study's list and `exclude`, in the simulator's order (the first max_tasks if > 0)."""
    tasks = [t for t in all_tasks if t not in study_tasks and t not in exclude]
    return tasks[:max_tasks] if max_tasks else tasks


def collection(params: Params, study: CollectParams) -> tuple[CollectParams, list[Problem]]:
    """What to collect, with the study's cameras, image size and episode length; problems if it could touch the
    study (a shared layout seed) or has nothing to collect."""
    known = list(get_simulator(study.simulator).tasks)
    tasks = pretrain_tasks(known, study.tasks, params.exclude, params.max_tasks)
    problems = [Problem(f"{STAGE}.exclude[{i}]", t, f"not a {study.simulator} task",
                        f"use a task of common/simulators/{study.simulator}")
                for i, t in enumerate(params.exclude) if t not in known]
    if params.seed == study.seed:
        problems.append(Problem(f"{STAGE}.seed", params.seed, f"equals {STUDY_SECTION}.seed",
                                f"use another seed (e.g. {study.seed + 1000}) so no layout draw repeats the study's"))
    if not tasks:
        problems.append(Problem(f"{STAGE}.exclude", params.exclude,
                                f"leaves no {study.simulator} task outside the study",
                                "exclude fewer tasks"))
    chosen = CollectParams(simulator=study.simulator, tasks=tasks or list(study.tasks),
                           demos_per_task=params.demos_per_task,
                           val_demos_per_task=params.val_demos_per_task, heldout_layouts_per_task=0,
                           max_attempts_per_task=params.max_attempts_per_task,
                           max_episode_steps=study.max_episode_steps, cameras=list(study.cameras),
                           image_size=study.image_size, seed=params.seed, workers=params.workers)
    problems += [dataclasses.replace(p, field=f"{STAGE}.{p.field}") for p in chosen.problems()]
    return chosen, problems
