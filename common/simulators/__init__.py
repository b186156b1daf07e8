"""The simulator interface and its registry: what collect, evaluation, the reference policies and the tokenizer
need of a simulator, and `get_simulator(name)` to find one.

A simulator is a family of tasks (each with a spoken instruction and categories) sharing cameras, an action space,
proprioception and an episode length; `scene(task, ...)` builds one task's environment. Each simulator lives in its
own module or package here, `common/simulators/<name>`, which registers itself on import
(`register_simulator(name, simulator)`); `get_simulator(name)` imports it on first use, so naming a simulator in
params.yaml is all a study does to select it. Nothing outside the module asks which simulator it has.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np

from common.config import closest_name
from common.demos.schema import ActionSpace


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """What a person would say to ask for the task, and which categories it belongs to."""

    instruction: str
    categories: tuple[str, ...]


class Expert(Protocol):
    """A scripted expert: the action for a state observation (before clipping to the action space)."""

    def get_action(self, obs: np.ndarray) -> np.ndarray:
        """The expert's action for one state observation."""
        ...


@runtime_checkable
class Scene(Protocol):
    """One task's environment, rendering some of the simulator's cameras at a fixed square size."""

    task: str
    cameras: tuple[str, ...]
    control_hz: float  # control steps per second

    def draw_layout(self, seed: int, pool: str, index: int) -> np.ndarray:
        """Layout `index` of a pool ("demos" or "heldout"): depends only on (seed, task, pool, index)."""
        ...

    def reset(self, layout: np.ndarray) -> np.ndarray:
        """Reset to a layout; the state observation (what a scripted expert reads)."""
        ...

    def step(self, action: np.ndarray) -> tuple[np.ndarray, bool, dict[str, Any]]:
        """Apply one action; (state observation, success, info)."""
        ...

    def render(self, cameras: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """One upright (H, W, 3) uint8 image per camera (default: every camera of the scene)."""
        ...

    def proprio(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        """The simulator's proprio_keys, float32 each, from a state observation."""
        ...

    def shift_appearance(self, severity: float | None, seed: int) -> None:
        """A seeded appearance change of severity in [0, 1] (0 or None: as collected), physics untouched."""
        ...

    def close(self) -> None:
        """Release the renderer and the environment."""
        ...


@runtime_checkable
class Simulator(Protocol):
    """A family of tasks and what they share."""

    name: str  # the registry name, recorded as the dataset's `env`
    tasks: Mapping[str, TaskInfo]  # every task, in the simulator's own order
    categories: tuple[str, ...]  # the categories tasks may belong to
    cameras: tuple[str, ...]  # every camera a scene can render
    action_space: ActionSpace
    proprio_keys: tuple[str, ...]
    proprio_dim: int
    max_episode_steps: int  # the simulator refuses to step past it

    def version(self) -> str:
        """Versions of the simulator stack that produce the data."""
        ...

    def scene(self, task: str, cameras: tuple[str, ...], image_size: int) -> Scene:
        """One task's environment rendering `cameras` at image_size x image_size."""
        ...

    def expert(self, task: str) -> Expert | None:
        """The task's scripted expert, or None where the simulator has none."""
        ...


_SIMULATORS: dict[str, Simulator] = {}


def register_simulator(name: str, simulator: Simulator) -> Simulator:
    """Make `simulator` known as `name` (a simulator module calls this on import)."""
    if name in _SIMULATORS and _SIMULATORS[name] is not simulator:
        raise ValueError(f"a simulator named {name!r} is already registered ({_SIMULATORS[name]!r})")
    _SIMULATORS[name] = simulator
    return simulator


def known_simulators() -> list[str]:
    """The registered simulators and the modules here that would register one on import."""
    modules = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    return sorted(modules | set(_SIMULATORS))


def get_simulator(name: str) -> Simulator:
    """The simulator registered as `name`, importing common/simulators/<name> on first use."""
    if name not in _SIMULATORS and name in known_simulators():
        importlib.import_module(f"{__name__}.{name}")
    if name not in _SIMULATORS:
        hint = closest_name(name, known_simulators())
        raise ValueError(f"unknown simulator {name!r}" + (f" (did you mean {hint!r}?)" if hint else "")
                         + f"; known simulators: {known_simulators()}. Next step: use one of them, or add "
                         f"common/simulators/<name> that calls register_simulator")
    return _SIMULATORS[name]


def task_info(simulator: Simulator, task: str) -> TaskInfo:
    """The simulator's entry for a task; an unknown name raises with the closest match."""
    if task not in simulator.tasks:
        hint = closest_name(task, simulator.tasks)
        raise ValueError(f"unknown {simulator.name} task {task!r}." + (f" Did you mean {hint!r}?" if hint else "")
                         + f" Known tasks: see common/simulators/{simulator.name}")
    return simulator.tasks[task]
