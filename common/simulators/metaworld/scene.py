"""Meta-World 3.x scenes with fast offscreen rendering and explicit, seeded object/goal layouts.

A layout is the vector Meta-World samples object and goal positions from (its `rand_vec`). Layouts are drawn
here from a seed, the task name, a pool (demonstrations or held-out) and an index, so that every layout can be
named by an id, recorded, and rebuilt exactly by the evaluation stage.
"""

from __future__ import annotations

import functools
import os
import pickle
import zlib
from typing import Any

import numpy as np

from common.simulators.metaworld import CAMERAS, LAYOUT_POOLS, ROTATED_180

os.environ.setdefault("MUJOCO_GL", "egl")  # headless; must be set before mujoco is imported
# Mesa's llvmpipe starts one raster thread per core; at these image sizes they add nothing for one process and
# contend with the other simulator workers (measured: benchmarks/collect_throughput.py).
os.environ.setdefault("LP_NUM_THREADS", "1")

import mujoco  # noqa: E402


def _task_kwargs(task: str) -> dict[str, Any]:
    from metaworld.env_dict import MT50_V3_ARGS_KWARGS

    return {k: v for k, v in MT50_V3_ARGS_KWARGS[task]["kwargs"].items() if k != "task_id"}


def draw_layout(env: Any, seed: int, pool: str, index: int) -> np.ndarray:
    """Layout number `index` of a pool: depends only on (seed, task, pool, index), not on the env's history.

    Drawn by the task's own reset logic, not uniformly from its box: several tasks re-draw until object and goal
    are far enough apart, and given a frozen layout that violates this, their reset never returns.
    """
    task = env.task_name_v3
    env._set_task_called = True
    env._set_task_inner(**_task_kwargs(task))
    env._freeze_rand_vec = False
    env.seeded_rand_vec = True  # draw from env.np_random, which is seeded here, not from numpy's global state
    entropy = [seed, zlib.crc32(task.encode()), LAYOUT_POOLS[pool], index]
    env.seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))
    env.reset()
    return np.array(env._last_rand_vec, dtype=np.float64)


def make_env(task: str) -> Any:
    """A bare Meta-World environment for an MT50 task name."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    env = ALL_V3_ENVIRONMENTS[task]()
    env.task_name_v3 = task  # Meta-World's own task_name is the class name
    return env


@functools.lru_cache(maxsize=None)
def _layout_env(task: str) -> Any:
    return make_env(task)


def sample_layout(task: str, seed: int, pool: str, index: int) -> np.ndarray:
    """`draw_layout` with an environment kept for the purpose (one per task and process)."""
    return draw_layout(_layout_env(task), seed, pool, index)


class MetaWorldSim:
    """One Meta-World task with a set of cameras rendered at a fixed size (a `common.simulators.Scene`)."""

    def __init__(self, task: str, cameras: tuple[str, ...], image_size: int):
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown:
            raise ValueError(f"unknown Meta-World camera(s) {unknown}; choose from {list(CAMERAS)}")
        self.task = task
        self.cameras = cameras
        self.image_size = image_size
        self._task_kwargs = _task_kwargs(task)
        self.env = make_env(task)
        self._cls = type(self.env)
        self.control_hz = 1.0 / float(self.env.dt)
        # Fast CPU rendering: no multisampling (must be set before the GL context exists), no shadows or
        # reflections. Together about 10x faster than Meta-World's default renderer, at the same geometry.
        self.env.model.vis.quality.offsamples = 0
        self._renderer = mujoco.Renderer(self.env.model, image_size, image_size)
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._shift: Any = None  # the visual-shift editor, built on first use (evaluation only)

    def draw_layout(self, seed: int, pool: str, index: int) -> np.ndarray:
        """A layout drawn with this simulator's own environment (same result as `sample_layout`)."""
        return draw_layout(self.env, seed, pool, index)

    def reset(self, layout: np.ndarray) -> np.ndarray:
        """Reset to the given layout, with the goal visible in the (expert's) observation."""
        from metaworld.types import Task

        data = dict(self._task_kwargs, env_cls=self._cls, rand_vec=np.asarray(layout), partially_observable=False)
        self.env.set_task(Task(env_name=self.task, data=pickle.dumps(data)))
        obs, _ = self.env.reset()
        return obs

    def step(self, action: np.ndarray) -> tuple[np.ndarray, bool, dict[str, Any]]:
        """Apply one action; return (observation, success, info)."""
        obs, _, _, _, info = self.env.step(action)
        return obs, bool(info["success"]), info

    def render(self, cameras: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """One upright (H, W, 3) uint8 image per camera (default: every camera of this simulator)."""
        images = {}
        for camera in self.cameras if cameras is None else cameras:
            self._renderer.update_scene(self.env.data, camera=camera)
            frame = self._renderer.render()
            images[camera] = frame[::-1, ::-1].copy() if camera in ROTATED_180 else frame.copy()
        return images

    @staticmethod
    def proprio(obs: np.ndarray) -> dict[str, np.ndarray]:
        """End-effector position and gripper opening from a Meta-World observation."""
        return {"ee_pos": obs[0:3].astype(np.float32), "gripper_states": obs[3:4].astype(np.float32)}

    def shift_appearance(self, severity: float | None, seed: int) -> None:
        """Apply the seeded visual shift of `severity` (None or 0: the collected appearance); see shift.py."""
        if self._shift is None:
            from common.simulators.metaworld.shift import VisualShift

            self._shift = VisualShift(self.env.model)
        self._shift.apply(severity, seed)

    def close(self) -> None:
        """Release the renderer and the environment."""
        self._renderer.close()
        self.env.close()
