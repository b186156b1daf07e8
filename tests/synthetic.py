"""Synthetic demonstration files for fast tests: a square that moves by the (hidden) action each step."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.demos import ActionSpace, DatasetMeta, DemoWriter, Episode

MOVES = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]])  # right, left, down, up (in pixels of 2)


def moving_square_frames(actions: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Frames (T, size, size, 3): a 4x4 white square at a random start, moved 2 px by each action's (dx, dy)."""
    pos = rng.integers(4, size - 8, 2)
    frames = np.zeros((len(actions), size, size, 3), np.uint8)
    frames[..., 2] = 40  # background colour
    for t, action in enumerate(actions):
        x, y = pos
        frames[t, y : y + 4, x : x + 4] = 255
        pos = np.clip(pos + 2 * np.round(action[:2]).astype(int), 0, size - 4)
    return frames


def write_moving_square_dataset(path: Path, episodes: int = 6, length: int = 12, size: int = 16,
                                val_episodes: int = 2, seed: int = 0) -> Path:
    """A valid demonstration file whose frame changes are determined by hidden 4-D actions."""
    rng = np.random.default_rng(seed)
    meta = DatasetMeta(
        env="synthetic", env_version="0", cameras=("corner", "gripperPOV"), image_size=(size, size),
        image_origin="upright", action_space=ActionSpace(4, ("dx", "dy", "dz", "gripper"), (-1.0,) * 4, (1.0,) * 4),
        proprio_keys=("ee_pos", "gripper_states"), proprio_dim=4, control_hz=80.0, collection_seed=seed,
        code_version="test", tasks=("square",), heldout_layouts={"square": []}, extra={},
    )
    with DemoWriter(path, meta) as writer:
        for i in range(episodes + val_episodes):
            moves = MOVES[rng.integers(0, 4, length)]
            actions = np.concatenate([moves, rng.uniform(-1, 1, (length, 2))], axis=1).astype(np.float32)
            frames = moving_square_frames(actions, size, rng)
            done = np.eye(length, dtype=bool)[-1]
            writer.add(Episode(
                task="square", instruction="move the square", layout_id=i, layout=np.zeros(1),
                split="train" if i < episodes else "val", actions=actions,
                proprio={"ee_pos": rng.normal(size=(length, 3)).astype(np.float32),
                         "gripper_states": rng.uniform(size=(length, 1)).astype(np.float32)},
                images={"corner": frames, "gripperPOV": frames[:, ::-1].copy()}, success=done, dones=done,
            ))
    return path
