"""Action chunks: the K actions starting at every step of every demo, normalized, padded explicitly at the end.

A chunk that runs past its episode's end repeats the episode's last action (edge padding) and a mask records which
steps are padding, so training, evaluation and token extraction all see the same chunks.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from common.demos import DatasetError, DemoReader, Stats
from common.demos.schema import ACTIONS
from common.normalize import normalize

CHUNKS, PAD = "chunks", "pad"  # batch keys
PADDING = "steps past the episode end repeat its last action (edge padding); pad marks them"


def chunk_episode(actions: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, A) actions -> chunks (T, K, A) starting at every step, and pad (T, K), True past the episode end."""
    length = len(actions)
    steps = np.arange(length)[:, None] + np.arange(chunk)[None, :]  # (T, K)
    pad = steps >= length
    return actions[np.minimum(steps, length - 1)], pad


@dataclasses.dataclass
class ActionChunks:
    """Every chunk of one split (or of all demos), normalized: chunk i starts at step[i] of demo episode[i]."""

    chunks: np.ndarray  # (N, K, A) float32, normalized
    pad: np.ndarray  # (N, K) bool
    raw: np.ndarray  # (N, K, A) float32, in action units (what reconstructions are scored against)
    episode: np.ndarray  # (N,) index into names
    names: list[str]

    @classmethod
    def load(cls, path: Path, split: str | None, chunk: int, normalization: str, stats: Stats, *,
             val_fraction: float) -> "ActionChunks":
        """Chunks of the demos of `split` (None: every demo) in file order (`val_fraction`: `study.val_fraction`)."""
        chunks, pads, raws, episodes, names = [], [], [], [], []
        with DemoReader(path, val_fraction) as reader:
            for name in reader.names:
                if split is not None and reader.split(name) != split:
                    continue
                actions = reader.group(name)[ACTIONS][()].astype(np.float32)
                raw, pad = chunk_episode(actions, chunk)
                raws.append(raw)
                chunks.append(normalize(raw, stats, normalization))
                pads.append(pad)
                episodes.append(np.full(len(raw), len(names)))
                names.append(name)
        if not names:
            raise DatasetError(f"{path}: no demo of split {split!r}. Next step: collect with val demos "
                               "(collect.val_demos_per_task > 0) or check the split attributes")
        return cls(np.concatenate(chunks), np.concatenate(pads), np.concatenate(raws), np.concatenate(episodes), names)

    def __len__(self) -> int:
        return len(self.chunks)

    def batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """Chunks `rows` as tensors."""
        return {CHUNKS: torch.from_numpy(self.chunks[rows]), PAD: torch.from_numpy(self.pad[rows])}

    def sample(self, seed: int, step: int, process: int, batch_size: int) -> dict[str, torch.Tensor]:
        """The batch for one training step and process: a pure function of its arguments (exact resume)."""
        rng = np.random.default_rng([seed, step, process])
        return self.batch(rng.integers(0, len(self.chunks), batch_size))
