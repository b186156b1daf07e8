"""The reference policy: it builds, learns, saves and loads to identical outputs, and acts deterministically in
environment units through common/policy.py's registry."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from common.demos.schema import Stats
from common.normalize import unnormalize
from common.policy import Observation, PolicyError, load_policy
from common.reference.data import chunks
from common.reference.model import (
    ACTION_MASK,
    ACTIONS,
    IMAGES,
    PROPRIO,
    TASK,
    ModelParams,
    ReferenceSpec,
    feature_side,
    l1_objective,
    make_reference,
    masked_l1,
    random_shift,
)
from common.reference.policy import ReferencePolicy, load_reference, save_reference, stats_to_json

CAMERAS, SIZE, CHUNK, ACTION_DIM, PROPRIO_DIM = ("corner", "gripperPOV"), 16, 4, 4, 5
TASKS = ("reach-v3", "push-v3")
TINY = ModelParams(widths=(8, 16), feature_dim=16, task_dim=4, proprio_hidden=8, hidden=32, layers=2)


def spec() -> ReferenceSpec:
    return ReferenceSpec(CHUNK, ACTION_DIM, PROPRIO_DIM, CAMERAS, SIZE, TASKS, TINY)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny convs on a shared 2-core machine run ~100x slower on two contended threads than on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def stats(low: float, high: float, dim: int) -> Stats:
    """Statistics whose 1st/99th percentiles are [low, high] in every dimension (environment units differ from the
    normalized [-1, 1], so a missing unnormalization shows)."""
    def full(v: float) -> np.ndarray:
        return np.full(dim, v, np.float32)

    return Stats(mean=full((low + high) / 2), std=full(1.0), min=full(low - 1), max=full(high + 1), q01=full(low),
                 q99=full(high))


def synthetic_batch(batch: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, CHUNK), bool)
    mask[0, 2:] = False  # an episode's last steps
    return {IMAGES: torch.from_numpy(rng.integers(0, 256, (batch, len(CAMERAS), SIZE, SIZE, 3), dtype=np.uint8)),
            PROPRIO: torch.from_numpy(rng.uniform(-1, 1, (batch, PROPRIO_DIM)).astype(np.float32)),
            TASK: torch.from_numpy(rng.integers(0, len(TASKS), batch)),
            ACTIONS: torch.from_numpy(rng.uniform(-1, 1, (batch, CHUNK, ACTION_DIM)).astype(np.float32)),
            ACTION_MASK: torch.from_numpy(mask)}


def observation(batch: int = 3, seed: int = 1) -> Observation:
    rng = np.random.default_rng(seed)
    return Observation(images={c: rng.integers(0, 256, (batch, SIZE, SIZE, 3), dtype=np.uint8) for c in CAMERAS},
                       proprio=rng.normal(size=(batch, PROPRIO_DIM)).astype(np.float32),
                       instructions=("reach",) * batch, tasks=tuple(TASKS[i % 2] for i in range(batch)),
                       states=np.zeros((batch, 39)))


def saved_policy(directory: Path, seed: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"normalization": "quantile", "action_stats": stats_to_json(stats(-2.0, 6.0, ACTION_DIM)),
            "proprio_stats": stats_to_json(stats(-1.0, 1.0, PROPRIO_DIM))}
    save_reference(make_reference(spec(), seed), directory, meta)
    return directory


def test_network_shapes_and_size() -> None:
    model = make_reference(spec(), 0)
    assert model(synthetic_batch()).shape == (6, CHUNK, ACTION_DIM)
    assert feature_side(64, 4) == 4 and feature_side(16, 4) == 1 and feature_side(32, 4) == 2
    default = ModelParams(widths=(32, 64, 128, 128), feature_dim=128, task_dim=32, proprio_hidden=64, hidden=256,
                          layers=2)
    big = make_reference(ReferenceSpec(8, 4, 4, CAMERAS, 64, TASKS * 3, default), 0)
    assert 0.9e6 < sum(p.numel() for p in big.parameters()) < 1.3e6  # the ~1M-parameter policy of the issue
    same = make_reference(spec(), 0).state_dict()
    assert all(torch.equal(v, same[k]) for k, v in model.state_dict().items())  # seeded initialisation


def test_a_few_steps_fit_a_batch() -> None:
    torch.manual_seed(0)
    model = make_reference(spec(), 0)
    batch = synthetic_batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    with torch.no_grad():
        first = float(l1_objective(model, batch)[0])
    for _ in range(20):
        loss, metrics = l1_objective(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert metrics["l1"] == pytest.approx(float(loss.detach()))
    with torch.no_grad():
        assert float(l1_objective(model, batch)[0]) < 0.7 * first


def test_l1_ignores_steps_past_the_episode_end() -> None:
    batch = synthetic_batch()
    predicted = torch.zeros(6, CHUNK, ACTION_DIM)
    changed = {**batch, ACTIONS: batch[ACTIONS].clone()}
    changed[ACTIONS][0, 2:] = 100.0  # masked steps
    assert float(masked_l1(predicted, changed)) == pytest.approx(float(masked_l1(predicted, batch)))
    changed[ACTIONS][0, 1] = 100.0  # an unmasked step
    assert float(masked_l1(predicted, changed)) > float(masked_l1(predicted, batch)) + 1


def test_chunks_pad_past_the_end() -> None:
    actions = np.arange(6, dtype=np.float32).reshape(3, 2)
    out, mask = chunks(actions, 2)
    assert out.shape == (3, 2, 2) and mask.tolist() == [[True, True], [True, True], [True, False]]
    assert out[2, 0].tolist() == [4.0, 5.0] and out[2, 1].tolist() == [0.0, 0.0] and out[0, 1].tolist() == [2.0, 3.0]


def test_random_shift_is_a_seeded_translation() -> None:
    images = np.random.default_rng(0).integers(0, 256, (3, 2, 8, 8, 3), dtype=np.uint8)
    assert random_shift(images, 0, np.random.default_rng(0)) is images
    shifted = random_shift(images, 2, np.random.default_rng(5))
    assert shifted.shape == images.shape and shifted.dtype == np.uint8
    assert np.array_equal(shifted, random_shift(images, 2, np.random.default_rng(5)))
    assert not np.array_equal(shifted, images)
    padded = np.pad(images, ((0, 0), (0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    for b in range(3):
        for c in range(2):
            assert any(np.array_equal(shifted[b, c], padded[b, c, y : y + 8, x : x + 8])
                       for y in range(5) for x in range(5))


def test_save_then_load_gives_identical_outputs(tmp_path: Path) -> None:
    directory = saved_policy(tmp_path / "policy")
    original = make_reference(spec(), 0).eval()
    loaded, meta = load_reference(directory)
    batch = synthetic_batch()
    assert torch.equal(loaded(batch), original(batch)) and not loaded.training
    assert meta["policy"] == "reference" and meta["spec"]["tasks"] == list(TASKS)


def test_policy_acts_deterministically_in_environment_units(tmp_path: Path) -> None:
    directory = saved_policy(tmp_path / "policy")
    policy = load_policy(directory)  # through the registry, by meta.json's "policy"
    assert isinstance(policy, ReferencePolicy)
    assert (policy.chunk, policy.cameras, policy.image_size) == (CHUNK, CAMERAS, SIZE)
    obs = observation()
    actions = policy.act(obs)
    assert actions.shape == (3, CHUNK, ACTION_DIM) and actions.dtype == np.float32
    assert np.array_equal(actions, policy.act(obs)) and np.array_equal(actions, load_policy(directory).act(obs))
    assert actions.min() >= -2.0 and actions.max() <= 6.0 and actions.max() > 1.0  # the stats' [q01, q99]
    net, _ = load_reference(directory)
    batch = {IMAGES: torch.from_numpy(np.stack([obs.images[c] for c in CAMERAS], 1)),
             PROPRIO: torch.from_numpy(np.clip(obs.proprio, -1, 1)), TASK: torch.tensor([0, 1, 0])}
    expected = unnormalize(net(batch).detach().clamp(-1, 1).numpy(), stats(-2.0, 6.0, ACTION_DIM), "quantile")
    np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-5)
    # One environment's actions do not depend on the others in its batch (eval mode: no batch statistics).
    single = Observation(images={c: v[1:2] for c, v in obs.images.items()}, proprio=obs.proprio[1:2],
                         instructions=obs.instructions[1:2], tasks=obs.tasks[1:2], states=obs.states[1:2])
    np.testing.assert_allclose(policy.act(single)[0], actions[1], rtol=1e-5, atol=1e-5)


def test_policy_refuses_unknown_tasks_and_missing_cameras(tmp_path: Path) -> None:
    policy = load_policy(saved_policy(tmp_path / "policy"))
    obs = observation()
    with pytest.raises(PolicyError, match="not trained"):
        policy.act(Observation(obs.images, obs.proprio, obs.instructions, ("reach-v3", "door-open-v3", "push-v3"),
                               obs.states))
    with pytest.raises(PolicyError, match="lacks"):
        policy.act(Observation({"corner": obs.images["corner"]}, obs.proprio, obs.instructions, obs.tasks,
                               obs.states))
