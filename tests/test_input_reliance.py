"""benchmarks.input_reliance tells a policy that reads its images from one that acts on proprio alone."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.input_reliance import Frames, reliance, within_task_permutation
from common.demos.schema import Stats

CHUNK, ACTION_DIM = 2, 4


def _frames(count: int = 40) -> Frames:
    """Two tasks; each frame's action is its image's mean brightness on dims 0-1 and its proprio on dims 2-3."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(count, 8, 8, 3), dtype=np.uint8)
    proprio = rng.uniform(-1, 1, size=(count, 2)).astype(np.float32)
    brightness = images.reshape(count, -1).mean(1, keepdims=True) / 127.5 - 1.0
    actions = np.concatenate([np.repeat(brightness, 2, 1), proprio], 1).astype(np.float32)
    tasks = tuple("reach" if i % 2 else "push" for i in range(count))
    return Frames({"corner": images}, proprio, tasks, tasks, np.repeat(actions[:, None], CHUNK, 1))


class _Policy:
    """Reads the camera and/or the proprio into the dims the frames define, zeros elsewhere."""

    chunk, cameras, image_size = CHUNK, ("corner",), 8

    def __init__(self, images: bool, proprio: bool):
        self.images, self.proprio = images, proprio

    def act(self, obs):
        count = obs.batch
        out = np.zeros((count, CHUNK, ACTION_DIM), np.float32)
        if self.images:
            out[:, :, :2] = (obs.images["corner"].reshape(count, -1).mean(1) / 127.5 - 1.0)[:, None, None]
        if self.proprio:
            out[:, :, 2:] = obs.proprio[:, None, :]
        return out


STATS = Stats(*(np.full(ACTION_DIM, v, np.float32) for v in (0.0, 1.0, -1.0, 1.0, -1.0, 1.0)))


def test_a_policy_blind_to_its_images_loses_nothing_when_they_are_swapped_and_a_seeing_one_does():
    frames = _frames()
    blind = reliance(_Policy(images=False, proprio=True), frames, STATS, "quantile", seed=0)
    seeing = reliance(_Policy(images=True, proprio=False), frames, STATS, "quantile", seed=0)
    assert blind["images_swapped"] == pytest.approx(blind["true"])
    assert blind["proprio_swapped"] > blind["true"] + 0.1
    assert seeing["images_swapped"] > seeing["true"] + 0.001
    assert seeing["proprio_swapped"] == pytest.approx(seeing["true"])
    both = reliance(_Policy(images=True, proprio=True), frames, STATS, "quantile", seed=0)
    assert both["true"] < min(blind["true"], seeing["true"])


def test_the_swap_stays_within_each_task_and_moves_every_frame_of_a_task_with_two_or_more():
    tasks = ("a", "b", "a", "a", "c", "b")
    order = within_task_permutation(tasks, np.random.default_rng(3))
    assert sorted(order) == list(range(len(tasks)))
    assert all(tasks[i] == tasks[j] for i, j in enumerate(order))
    assert all(order[i] != i for i in range(len(tasks)) if tasks.count(tasks[i]) > 1)
    assert order[4] == 4  # the only frame of its task stays
