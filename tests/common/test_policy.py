"""The policy interface: built-in reference policies, the loader registry, and clear errors for bad policies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common.cli import StageError
from common.policy import (
    Observation,
    PolicyError,
    check_actions,
    load_policy,
    policy_meta,
    read_policy_meta,
    register_loader,
)


def observation(states: np.ndarray, tasks: tuple[str, ...]) -> Observation:
    batch = len(tasks)
    return Observation(images={}, proprio=np.zeros((batch, 4), np.float32), instructions=("do it",) * batch,
                       tasks=tasks, states=states)


class Constant:
    chunk, cameras, image_size = 2, (), 0

    def __init__(self, action_dim: int) -> None:
        self.action_dim = action_dim

    def act(self, obs: Observation) -> np.ndarray:
        return np.zeros((obs.batch, self.chunk, self.action_dim), np.float32)


@register_loader("test_npz")
def load_npz(directory: Path, meta: dict) -> Constant:
    with np.load(directory / "weights.npz") as weights:  # a corrupt file raises here
        return Constant(int(weights["action_dim"]))


def write_policy(directory: Path, meta: object, weights: bytes | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "meta.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    if weights is not None:
        (directory / "weights.npz").write_bytes(weights)
    return directory


def test_builtins_load_by_name_and_unknown_names_suggest_the_closest() -> None:
    assert load_policy("expert", "metaworld").chunk == 1 and load_policy("random", "metaworld").cameras == ()
    assert policy_meta("random") == {"policy": "random"}
    with pytest.raises(PolicyError, match="did you mean 'expert'"):
        load_policy("expret")
    with pytest.raises(PolicyError, match="none was named"):
        load_policy("expert")


def test_expert_acts_per_task_within_bounds() -> None:
    from common.simulators.metaworld.scene import draw_layout, make_env

    def state(task: str) -> np.ndarray:
        env = make_env(task)
        draw_layout(env, 0, "demos", 0)
        return env.reset()[0]

    states = np.stack([state(t) for t in ("drawer-open-v3", "reach-v3")])
    actions = load_policy("expert", "metaworld").act(observation(states, ("drawer-open-v3", "reach-v3")))
    assert actions.shape == (2, 1, 4) and actions.dtype == np.float32
    assert np.abs(actions).max() <= 1.0 and not np.array_equal(actions[0], actions[1])


def test_random_policy_depends_on_each_state_not_on_the_batch() -> None:
    policy = load_policy("random", "metaworld")
    states = np.random.default_rng(0).normal(size=(3, 39))
    together = policy.act(observation(states, ("reach-v3",) * 3))
    alone = policy.act(observation(states[1:2], ("reach-v3",)))
    assert together.shape == (3, policy.chunk, 4) and np.abs(together).max() <= 1.0
    np.testing.assert_array_equal(together[1], alone[0])
    assert not np.array_equal(together[0], together[1])


def test_directory_policy_loads_through_its_registered_loader(tmp_path: Path) -> None:
    buffer = tmp_path / "w.npz"
    np.savez(buffer, action_dim=np.array(4))
    directory = write_policy(tmp_path / "p", {"policy": "test_npz", "strategy": "baseline"}, buffer.read_bytes())
    assert load_policy(directory).action_dim == 4
    assert read_policy_meta(directory)["strategy"] == "baseline"


@pytest.mark.parametrize("meta, weights, message", [
    (None, None, "meta.json: no such file"),
    ("{not json", None, "not valid JSON"),
    ({"strategy": "baseline"}, None, "'policy' is missing"),
    ({"policy": "test_npy"}, None, "did you mean 'test_npz'"),
    ({"policy": "test_npz"}, b"\x00garbage", "loader failed.*corrupt"),
])
def test_corrupt_or_unknown_policy_directories_are_clear_errors(tmp_path: Path, meta: object, weights: bytes | None,
                                                               message: str) -> None:
    directory = tmp_path / "p"
    if meta is None:
        directory.mkdir()
    else:
        write_policy(directory, meta, weights)
    with pytest.raises(PolicyError, match=message) as info:
        load_policy(directory)
    assert isinstance(info.value, StageError)  # the stage CLI reports it and exits 2
    assert str(directory) in str(info.value)


def test_actions_of_the_wrong_shape_are_rejected() -> None:
    obs = observation(np.zeros((2, 39)), ("reach-v3", "reach-v3"))
    ok = check_actions(np.zeros((2, 3, 4), np.float64), obs, 3, 4, "p")
    assert ok.dtype == np.float32
    with pytest.raises(PolicyError, match=r"shape \(2, 3, 7\).*environment's 4"):
        check_actions(np.zeros((2, 3, 7)), obs, 3, 4, "p")
