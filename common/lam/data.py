"""Frame pairs (t, t+gap) and the action chunk between them, held in memory for fast random access."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from common.demos import DatasetError, DemoReader
from common.normalize import normalize

FRAME_T, FRAME_NEXT, ACTIONS = "frame_t", "frame_next", "actions"  # batch keys


@dataclasses.dataclass
class FramePairs:
    """All valid pairs of one split: pair i is (episode index[i, 0], step index[i, 1])."""

    frames: list[np.ndarray]  # per episode (T, H, W, 3) uint8
    actions: list[np.ndarray]  # per episode (T, A) float32, normalized
    episode_names: list[str]
    gap: int
    index: np.ndarray  # (M, 2) int64

    @classmethod
    def load(cls, path: Path, split: str, camera: str, gap: int, normalization: str, *,
             val_fraction: float) -> "FramePairs":
        """Read one split's frames of `camera` from a demonstration file (`val_fraction`: `study.val_fraction`)."""
        with DemoReader(path, val_fraction) as reader:
            if camera not in reader.meta.cameras:
                raise DatasetError(
                    f"{path}: no camera {camera!r}; it has {list(reader.meta.cameras)}. Next step: set lam.camera"
                )
            stats = reader.stats("actions")
            frames, actions, names, longest = [], [], [], 0
            for name in reader.names:
                if reader.split(name) != split:
                    continue
                episode = reader.episode(name, cameras=(camera,))
                longest = max(longest, episode.length)
                if episode.length <= gap:
                    continue
                frames.append(episode.images[camera])
                actions.append(normalize(episode.actions, stats, normalization))
                names.append(name)
        if not names:
            raise DatasetError(
                f"{path}: no '{split}' episode is longer than gap={gap} steps (longest: {longest}). "
                "Next step: lower lam.gap or collect longer episodes"
            )
        index = np.array([(e, t) for e, f in enumerate(frames) for t in range(len(f) - gap)], dtype=np.int64)
        return cls(frames, actions, names, gap, index)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def image_size(self) -> int:
        """Square image side in pixels."""
        return int(self.frames[0].shape[1])

    def batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """Pairs `rows` (indices into self.index) as tensors: two uint8 frames and the (gap, A) action chunk."""
        pairs = self.index[rows]
        first = np.stack([self.frames[e][t] for e, t in pairs])
        second = np.stack([self.frames[e][t + self.gap] for e, t in pairs])
        chunk = np.stack([self.actions[e][t : t + self.gap] for e, t in pairs])
        return {FRAME_T: torch.from_numpy(first), FRAME_NEXT: torch.from_numpy(second),
                ACTIONS: torch.from_numpy(chunk)}

    def sample(self, seed: int, step: int, process: int, batch_size: int) -> dict[str, torch.Tensor]:
        """The batch for one training step and process: a pure function of its arguments (exact resume)."""
        rng = np.random.default_rng([seed, step, process])
        return self.batch(rng.integers(0, len(self.index), batch_size))
