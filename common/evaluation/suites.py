"""Evaluation suites as data: which layouts, which visual shift, how many episodes; and the episode plan.

Layout sources, both read from the collect stage's output rather than re-drawn:
  train    the object/goal layouts of the training demonstrations (per-demo attribute `layout`), in file order;
  heldout  the layouts collect drew but never demonstrated (its metadata's `heldout_layouts`).
"""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from common.cli import StageError
from common.config import Problem
from common.demos import DatasetMeta, DemoReader
from common.demos import schema as S
from common.evaluation.worker import EpisodeSpec

LayoutSource = Literal["train", "heldout"]


@dataclasses.dataclass(frozen=True)
class SuiteParams:
    """One suite of the `evaluate.suites` list."""

    name: str
    layouts: LayoutSource
    visual_shift: float | None  # severity in [0, 1] of the scene edits (the simulator's shift_appearance); null: none
    episodes_per_task: int  # each on its own layout: at most as many as the source has

    def problems(self) -> list[Problem]:
        """Range checks."""
        out = []
        if not self.name or "/" in self.name:
            out.append(Problem("name", self.name, "must be a non-empty name without '/'", "e.g. seen"))
        if self.visual_shift is not None and not 0.0 < self.visual_shift <= 1.0:
            out.append(Problem("visual_shift", self.visual_shift, "must be in (0, 1] or null", "e.g. 0.5"))
        if self.episodes_per_task < 1:
            out.append(Problem("episodes_per_task", self.episodes_per_task, "must be at least 1", "e.g. 10"))
        return out


def read_layouts(reader: DemoReader) -> dict[str, dict[str, list[np.ndarray]]]:
    """{source: {task: [layout vectors]}} from a collect file: train demos in file order, held-out layouts."""
    train: dict[str, list[np.ndarray]] = {task: [] for task in reader.meta.tasks}
    for name in reader.names:
        attrs = reader.group(name).attrs
        if reader.split(name) == "train":
            task = str(attrs[S.ATTR_TASK])
            if task not in train:
                raise StageError(f"{reader.path}: {name} has task {task!r}, not among the file's tasks "
                                 f"{list(reader.meta.tasks)}; the file is inconsistent. Next step: rerun collect")
            train[task].append(np.asarray(attrs[S.ATTR_LAYOUT], dtype=np.float64))
    heldout = {task: [np.asarray(h["layout"], dtype=np.float64) for h in reader.meta.heldout_layouts.get(task, [])]
               for task in reader.meta.tasks}
    return {"train": train, "heldout": heldout}


def episode_seed(seed: int, suite: str, task: str, episode: int) -> int:
    """The seed of one episode: depends on (seed, suite, task, episode) only, never on scheduling."""
    entropy = [seed, zlib.crc32(suite.encode()), zlib.crc32(task.encode()), episode]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def task_categories(meta: DatasetMeta, declared: list[str], source: Path) -> dict[str, tuple[str, ...]]:
    """Each task's categories from the collect metadata; every task must belong to declared categories only."""
    recorded = meta.extra.get("categories")
    if not isinstance(recorded, dict):
        raise StageError(f"{source}: metadata has no extra.categories; the file predates task categories. "
                         "Next step: rerun `dvc repro collect`")
    out = {}
    for task in meta.tasks:
        categories = tuple(recorded.get(task, ()))
        undeclared = [c for c in categories if c not in declared]
        if not categories or undeclared:
            raise StageError(f"{source}: task {task!r} has categories {list(categories)}; every task needs at least "
                             f"one and only declared ones ({declared}). Next step: add them to evaluate.categories "
                             "or fix the simulator's task table (common/simulators/<env>) and rerun collect")
        out[task] = categories
    return out


def plan_episodes(
    suites: list[SuiteParams],
    meta: DatasetMeta,
    layouts: dict[str, dict[str, list[np.ndarray]]],
    categories: dict[str, tuple[str, ...]],
    seed: int,
    videos_per_task: int,
    source: Path,
) -> list[EpisodeSpec]:
    """Every episode of every suite, in a fixed order (suite, then episode, then task: tasks interleave)."""
    instructions = meta.extra.get("instructions", {})
    plan: list[EpisodeSpec] = []
    for suite in suites:
        for task in meta.tasks:
            have = len(layouts[suite.layouts][task])
            if suite.episodes_per_task > have:
                raise StageError(
                    f"evaluate.suites[{suite.name}].episodes_per_task = {suite.episodes_per_task}: {source} has only "
                    f"{have} {suite.layouts} layouts for {task} (each episode needs its own). Next step: lower it, "
                    "or raise collect.demos_per_task / collect.heldout_layouts_per_task and rerun collect")
            if task not in instructions:
                raise StageError(f"{source}: metadata extra.instructions lacks {task!r}. Next step: rerun collect")
        for episode in range(suite.episodes_per_task):
            for task in meta.tasks:
                plan.append(EpisodeSpec(
                    index=len(plan), suite=suite.name, task=task, instruction=instructions[task],
                    categories=categories[task], episode=episode, layout_index=episode,
                    layout=tuple(float(x) for x in layouts[suite.layouts][task][episode]),
                    seed=episode_seed(seed, suite.name, task, episode), visual_shift=suite.visual_shift,
                    video=episode < videos_per_task,
                ))
    return plan
