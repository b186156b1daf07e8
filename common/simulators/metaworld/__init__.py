"""Meta-World 3.x (MT50) as a `common.simulators.Simulator`: its task table, cameras, action space and experts.

Importing this package is cheap (no mujoco): the tokenizer reads the task table from it. Scenes (scene.py, which
chooses the headless rendering back-end before mujoco is imported) and the scripted experts load on first use.
"""

from __future__ import annotations

import importlib.metadata
from typing import Mapping

from common.demos.schema import ActionSpace
from common.simulators import Expert, Scene, TaskInfo, register_simulator
from common.simulators.metaworld.tasks import CATEGORIES, MT50

NAME = "metaworld"
WRIST_CAMERA = "gripperPOV"
FIXED_CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper")
CAMERAS = (*FIXED_CAMERAS, WRIST_CAMERA)
# Meta-World's corner cameras render upside-down (rotated by 180 degrees); images are stored upright.
ROTATED_180 = frozenset({"corner", "corner2", "corner3", "corner4"})
PROPRIO_KEYS = ("ee_pos", "gripper_states")  # end-effector xyz + gripper opening: no privileged object state
PROPRIO_DIM = 4
ACTION_SPACE = ActionSpace(
    dim=4, names=("dx", "dy", "dz", "gripper"), low=(-1.0, -1.0, -1.0, -1.0), high=(1.0, 1.0, 1.0, 1.0)
)
MAX_EPISODE_STEPS = 500  # Meta-World's max_path_length: the env refuses to step past it
LAYOUT_POOLS = {"demos": 0, "heldout": 1}


class MetaWorld:
    """The MT50 tasks: instructions and categories from tasks.py, scenes from scene.py, Meta-World's experts."""

    name = NAME
    tasks: Mapping[str, TaskInfo] = MT50
    categories = CATEGORIES
    cameras = CAMERAS
    action_space = ACTION_SPACE
    proprio_keys = PROPRIO_KEYS
    proprio_dim = PROPRIO_DIM
    max_episode_steps = MAX_EPISODE_STEPS

    def version(self) -> str:
        """Versions of the simulator stack that produced the data."""
        versions = {name: importlib.metadata.version(name) for name in ("metaworld", "mujoco")}
        return " ".join(f"{k}=={v}" for k, v in versions.items())

    def scene(self, task: str, cameras: tuple[str, ...], image_size: int) -> Scene:
        """One task's environment (model compile plus a GL context: about a second)."""
        from common.simulators.metaworld.scene import MetaWorldSim

        return MetaWorldSim(task, cameras, image_size)

    def expert(self, task: str) -> Expert | None:
        """Meta-World's scripted expert for the task (every MT50 task has one)."""
        from metaworld.policies import ENV_POLICY_MAP

        return ENV_POLICY_MAP[task]()


SIMULATOR = register_simulator(NAME, MetaWorld())
