"""The simulator interface: a test double registered here (and nowhere else) runs through collect's expert rollout,
the dataset writer and the evaluation workers, so adding a simulator is one new module implementing the Protocol."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from common.collection import CollectParams, dataset_meta
from common.collection.rollout import Job, SimSpec, probe_task, run_expert
from common.config import ParamsError, from_dict
from common.demos import DemoWriter, validate_file
from common.demos.schema import ActionSpace
from common.evaluation.rollout import run_episodes
from common.evaluation.worker import EpisodeSpec, SimSettings
from common.policy import load_policy
from common.simulators import (
    _SIMULATORS,
    Scene,
    Simulator,
    TaskInfo,
    get_simulator,
    known_simulators,
    register_simulator,
)

NAME = "toy_reach"


class ToyScene:
    """A point in the plane that must reach a goal; the layout is the goal. Images show the point as a bright pixel."""

    def __init__(self, task: str, cameras: tuple[str, ...], image_size: int):
        self.task, self.cameras, self.image_size, self.control_hz = task, cameras, image_size, 10.0
        self.pos, self.goal, self.tint = np.zeros(2), np.zeros(2), 0

    def draw_layout(self, seed: int, pool: str, index: int) -> np.ndarray:
        rng = np.random.default_rng([seed, zlib.crc32(self.task.encode()), ("demos", "heldout").index(pool), index])
        return rng.choice([-1.0, 1.0], 2) * rng.uniform(0.5, 0.8, 2)  # far from the start: chance won't reach it

    def reset(self, layout: np.ndarray) -> np.ndarray:
        self.pos, self.goal = np.zeros(2), np.asarray(layout, dtype=np.float64)
        return np.concatenate([self.pos, self.goal])

    def step(self, action: np.ndarray) -> tuple[np.ndarray, bool, dict[str, Any]]:
        self.pos = self.pos + 0.1 * np.asarray(action, dtype=np.float64)
        return np.concatenate([self.pos, self.goal]), bool(np.linalg.norm(self.pos - self.goal) < 0.01), {}

    def render(self, cameras: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        images = {}
        for camera in self.cameras if cameras is None else cameras:
            image = np.full((self.image_size, self.image_size, 3), self.tint, np.uint8)
            row, col = ((np.clip(self.pos, -1, 1) + 1) / 2 * (self.image_size - 1)).astype(int)
            image[row, col] = 255
            images[camera] = image
        return images

    def proprio(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        return {"pos": obs[0:2].astype(np.float32)}

    def shift_appearance(self, severity: float | None, seed: int) -> None:
        self.tint = int(100 * (severity or 0.0))

    def close(self) -> None:
        pass


class ToyExpert:
    def get_action(self, obs: np.ndarray) -> np.ndarray:
        return np.clip((obs[2:4] - obs[0:2]) / 0.1, -1, 1)


class ToyReach:
    """Two point-reaching tasks, a 2-D action, one camera: nothing like Meta-World."""

    name = NAME
    tasks = {"reach-left": TaskInfo("reach the goal on the left", ("short",)),
             "reach-far": TaskInfo("reach the far goal", ("long_horizon",))}
    categories = ("short", "long_horizon")
    cameras = ("top",)
    action_space = ActionSpace(dim=2, names=("dx", "dy"), low=(-1.0, -1.0), high=(1.0, 1.0))
    proprio_keys = ("pos",)
    proprio_dim = 2
    max_episode_steps = 60

    def version(self) -> str:
        return "toy_reach==1"

    def scene(self, task: str, cameras: tuple[str, ...], image_size: int) -> Scene:
        return ToyScene(task, cameras, image_size)

    def expert(self, task: str) -> ToyExpert | None:
        return ToyExpert()


@pytest.fixture()
def toy() -> Iterator[ToyReach]:
    simulator = ToyReach()
    register_simulator(NAME, simulator)
    yield simulator
    _SIMULATORS.pop(NAME)


def collect_params(**changes: Any) -> CollectParams:
    raw = {"simulator": NAME, "tasks": ["reach-left", "reach-far"], "demos_per_task": 1, "val_demos_per_task": 0,
           "heldout_layouts_per_task": 2, "max_attempts_per_task": 2, "max_episode_steps": 40, "cameras": ["top"],
           "image_size": 8, "seed": 0, "workers": 1, **changes}
    return from_dict(CollectParams, raw, prefix="collect")


def test_the_double_and_meta_world_implement_the_protocol(toy: ToyReach) -> None:
    assert isinstance(toy, Simulator) and isinstance(toy.scene("reach-far", ("top",), 8), Scene)
    metaworld = get_simulator("metaworld")
    assert isinstance(metaworld, Simulator) and metaworld.name == "metaworld" and len(metaworld.tasks) == 50
    assert {"metaworld", NAME} <= set(known_simulators())


def test_unknown_simulator_names_the_closest_and_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown simulator 'metawrld' \(did you mean 'metaworld'\?\).*'metaworld'"):
        get_simulator("metawrld")
    with pytest.raises(ParamsError, match="collect.simulator = 'metawrld': names no simulator"):
        collect_params(simulator="metawrld")


def test_collect_params_are_checked_against_the_named_simulator(toy: ToyReach) -> None:
    with pytest.raises(ParamsError) as info:
        collect_params(tasks=["drawer-open-v3"], cameras=["corner"], max_episode_steps=100)
    text = str(info.value)
    for part in ("tasks[0] = 'drawer-open-v3': not a toy_reach task", "cameras[0] = 'corner': not a toy_reach camera",
                 "max_episode_steps = 100: toy_reach stops at 60"):
        assert part in text


def test_collect_rolls_out_the_doubles_expert_into_a_valid_dataset(toy: ToyReach, tmp_path: Path) -> None:
    params = collect_params()
    specs = [SimSpec(NAME, task, ("top",), 8) for task in params.tasks]
    facts = [probe_task(spec, params.seed, params.heldout_layouts_per_task) for spec in specs]
    assert [f.control_hz for f in facts] == [10.0, 10.0] and all(len(f.heldout) == 2 for f in facts)
    attempts = [run_expert(Job(spec, 0, params.max_episode_steps, params.seed)) for spec in specs]
    assert all(a.success and a.episode is not None for a in attempts)
    episode = attempts[0].episode
    assert episode.instruction == "reach the goal on the left" and episode.actions.shape[1] == 2
    assert episode.images["top"].shape[1:] == (8, 8, 3) and set(episode.proprio) == {"pos"}
    meta = dataset_meta(params, {f.task: f.heldout for f in facts}, 10.0, "test")
    assert (meta.env, meta.env_version, meta.action_space.dim) == (NAME, "toy_reach==1", 2)
    assert meta.extra["categories"] == {"reach-left": ["short"], "reach-far": ["long_horizon"]}
    path = tmp_path / "demos.hdf5"
    with DemoWriter(path, meta) as writer:
        for attempt in attempts:
            writer.add(attempt.episode)
    assert validate_file(path).tasks == ("reach-left", "reach-far")  # raises on any problem


def test_the_evaluation_workers_run_the_double_with_its_expert_and_random_policy(toy: ToyReach) -> None:
    plan = [EpisodeSpec(index=i, suite="seen", task=task, instruction=toy.tasks[task].instruction,
                        categories=toy.tasks[task].categories, episode=0, layout_index=0,
                        layout=tuple(ToyScene(task, (), 8).draw_layout(0, "demos", 0)), seed=i,
                        visual_shift=0.5 if i else None, video=i == 0)
            for i, task in enumerate(toy.tasks)]
    settings = SimSettings(simulator=NAME, policy_cameras=(), video_camera="top", image_size=8, max_steps=40,
                           video_stride=2)
    expert = run_episodes(load_policy("expert", NAME), plan, settings, 1, 2, 0, 2)
    assert all(r.success and r.failure is None for r in expert) and expert[0].frames
    random = run_episodes(load_policy("random", NAME), plan, settings, 8, 2, 0, 2)
    assert all(not r.success and r.failure == "timeout" and r.steps == 40 for r in random)


def test_the_tiny_tokenizer_learns_the_demos_instructions_and_every_task_of_their_simulator(toy: ToyReach) -> None:
    from common.vla.tokenizer import task_instructions

    every = {info.instruction for info in toy.tasks.values()}
    assert set(task_instructions(NAME)) == every
    assert set(task_instructions(NAME, ["reach the goal on the left", "wave"])) == every | {"wave"}
    assert not set(task_instructions("metaworld")) & every
    assert task_instructions("Libero_Kitchen_Tabletop_Manipulation", ["open the drawer"]) == ("open the drawer",)
