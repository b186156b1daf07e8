"""`evaluate`: run a policy closed-loop in the study's simulator on the evaluation suites and score its success.

The simulator is the one collect recorded as the dataset's `env` (common/simulators), never retyped here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from common.config import Problem
from common.evaluation.suites import SuiteParams
from common.simulators import Simulator

STAGE = "evaluate"
DEMOS = Path("data/collect/demos.hdf5")  # input: layouts, tasks, cameras, image size from the collect stage
RESULTS = Path("results/evaluate")  # results/evaluate/<name>/{episodes.jsonl, meta.json, videos/}
METRICS_DIR = Path("metrics/evaluate")  # metrics/evaluate/<name>.json
EPISODES_FILE, META_FILE, VIDEOS_DIR = "episodes.jsonl", "meta.json", "videos"
INPUTS = (DEMOS,)
# common/vla: the `vla` policy loader and its inference code (common/policy.py imports it on demand)
CODE = ("common/convstem.py", "common/cpu.py", "common/evaluation", "common/policy.py",
        "common/simulators", "common/vla", "stages/evaluate")


def results_dir(name: str) -> Path:
    """Where the per-episode results of evaluation `name` go."""
    return RESULTS / name


def metrics_path(name: str) -> Path:
    """The metrics file of evaluation `name`."""
    return METRICS_DIR / f"{name}.json"


@dataclasses.dataclass(frozen=True)
class Item:
    """What to evaluate and under which name (the DVC matrix passes `<strategy>-<seed>` for both)."""

    policy: str  # a built-in (expert, random) or a policy directory (its meta.json names the loader)
    name: str  # output name: results/evaluate/<name>/, metrics/evaluate/<name>.json

    def problems(self) -> list[Problem]:
        """The name becomes a folder and a file name."""
        if not self.name or "/" in self.name or self.name.startswith("."):
            return [Problem("name", self.name, "must be a plain file name", "e.g. baseline-0")]
        return []


@dataclasses.dataclass(frozen=True)
class Params:
    """The `evaluate` section of params.yaml. Simulator, tasks, cameras, image size and control rate come from the
    collect metadata; the policy's chunk, cameras and image size from the policy itself."""

    suites: list[SuiteParams]
    categories: list[str]  # the declared task categories (the simulator's); every evaluated task must be in some
    replan_every: int  # steps of each action chunk executed open-loop before re-planning (capped at the chunk)
    max_steps: int  # step limit per episode (timeout)
    parallel_episodes: int  # episodes advanced together; their observations form one policy batch
    workers: int  # simulator processes (0: simulate in this process)
    threads: int  # torch CPU threads of the policy (0: torch's default, one per core)
    seed: int
    videos_per_task: int  # episodes per task and suite recorded as GIF (the first ones)
    video_fps: int  # frames per second of the videos (a frame every control_hz / video_fps steps)

    def problems(self) -> list[Problem]:
        """Range and consistency checks."""
        out = []
        names = [s.name for s in self.suites]
        if not self.suites or len(set(names)) != len(names):
            out.append(Problem("suites", names, "must be non-empty with distinct names", "name each suite once"))
        for i, suite in enumerate(self.suites):
            out += [dataclasses.replace(p, field=f"suites[{i}].{p.field}") for p in suite.problems()]
        for name in ("replan_every", "max_steps", "parallel_episodes", "video_fps"):
            if getattr(self, name) < 1:
                out.append(Problem(name, getattr(self, name), "must be at least 1", "use a positive integer"))
        for name in ("workers", "threads", "videos_per_task"):
            if getattr(self, name) < 0:
                out.append(Problem(name, getattr(self, name), "must not be negative", "use 0 or more"))
        return out

    def simulator_problems(self, sim: Simulator) -> list[Problem]:
        """Checks against the simulator the dataset was collected in (known once collect's metadata is read)."""
        out = [Problem(f"categories[{i}]", c, f"not a {sim.name} category", f"use some of {sim.categories}")
               for i, c in enumerate(self.categories) if c not in sim.categories]
        if self.max_steps > sim.max_episode_steps:
            out.append(Problem("max_steps", self.max_steps, f"{sim.name} stops at {sim.max_episode_steps}",
                               f"use {sim.max_episode_steps} or less"))
        return out
