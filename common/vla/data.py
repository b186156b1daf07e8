"""Finetuning samples in memory: (current images, proprio, instruction) -> the next K actions, plus latents.

Sample (e, t) pairs the observation at step t with actions t..t+K-1 (steps past the episode's end are masked)
and the strategy's targets from the episode's latents (`Strategy.targets`). A batch is a pure function of
(seed, step, process), so resume is exact.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from common.demos import DatasetError, DemoReader
from common.demos.schema import Stats
from common.normalize import normalize
from common.vla.augment import AugmentParams, augment, eval_view
from common.vla.batch import ACTION_MASK, ACTIONS, ATTENTION, IMAGES, INPUT_IDS, PROPRIO
from common.vla.prompt import left_pad
from common.vla.strategies import Layout, Strategy


@dataclasses.dataclass
class Episodes:
    """One split's episodes: uint8 images per camera, normalized proprio and actions, optional latents."""

    names: list[str]
    instructions: list[str]
    images: list[np.ndarray]  # per episode (T, cams, H, W, 3) uint8
    proprio: list[np.ndarray]  # (T, P) float32, normalized
    actions: list[np.ndarray]  # (T, A) float32, normalized
    latents: list[dict[str, np.ndarray]]  # per episode sidecar arrays ({} for the baseline)
    index: np.ndarray  # (M, 2) int64: (episode, step)

    @classmethod
    def load(cls, path: Path, split: str, cameras: tuple[str, ...], action_stats: Stats, proprio_stats: Stats,
             normalization: str, *, val_fraction: float) -> "Episodes":
        """Read one split of a demonstration file (latents are attached later with `attach`; `val_fraction`:
        `study.val_fraction`)."""
        names, instructions, images, proprio, actions = [], [], [], [], []
        with DemoReader(path, val_fraction) as reader:
            for name in reader.names:
                if reader.split(name) != split:
                    continue
                episode = reader.episode(name, cameras=cameras)
                names.append(name)
                instructions.append(episode.instruction)
                images.append(np.stack([episode.images[c] for c in cameras], axis=1))
                proprio.append(normalize(episode.proprio_vector(reader.meta.proprio_keys), proprio_stats,
                                         normalization))
                actions.append(normalize(episode.actions, action_stats, normalization))
        if not names:
            raise DatasetError(f"{path}: no '{split}' episodes. Next step: rerun `dvc repro collect` with "
                               "val_demos_per_task > 0 (finetune scores held-out episodes)")
        index = np.array([(e, t) for e, a in enumerate(actions) for t in range(len(a))], dtype=np.int64)
        return cls(names, instructions, images, proprio, actions, [{} for _ in names], index)

    def lengths(self) -> dict[str, int]:
        """Steps per demo name."""
        return {n: len(a) for n, a in zip(self.names, self.actions)}

    def attach(self, episodes: dict[str, dict[str, np.ndarray]]) -> None:
        """Attach sidecar arrays (read and checked by common.vla.latents) to the episodes of this split."""
        self.latents = [episodes[n] for n in self.names]

    def __len__(self) -> int:
        return len(self.index)


class Batches:
    """Tensor batches for training and evaluation: prompts (token ids), images, proprio, actions, latents."""

    def __init__(self, episodes: Episodes, prompt_ids: Callable[[str], list[int]], pad_id: int, chunk: int,
                 strategy: Strategy, layout: Layout, augment_params: AugmentParams):
        self.episodes, self.chunk, self.strategy, self.layout = episodes, chunk, strategy, layout
        self.augment, self.pad_id = augment_params, pad_id
        self.prompts = [prompt_ids(i) for i in episodes.instructions]  # the processor runs once per episode

    def rows(self, rows: np.ndarray, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """Samples `rows` (indices into the index) as a batch; augmented when a generator is given."""
        ep = self.episodes
        pairs = ep.index[rows]
        images = torch.from_numpy(np.stack([ep.images[e][t] for e, t in pairs]))  # (B, cams, H, W, 3)
        chunks = np.zeros((len(pairs), self.chunk, ep.actions[0].shape[1]), np.float32)
        mask = np.zeros((len(pairs), self.chunk), bool)
        extra: dict[str, list[Any]] = {}
        for i, (e, t) in enumerate(pairs):
            ahead = ep.actions[e][t : t + self.chunk]
            chunks[i, : len(ahead)], mask[i, : len(ahead)] = ahead, True
            for key, value in self.strategy.targets(ep.latents[e], t, self.chunk, self.layout).items():
                extra.setdefault(key, []).append(value)
        ids, attention = left_pad([self.prompts[e] for e, _ in pairs], self.pad_id)
        batch = {
            INPUT_IDS: ids, ATTENTION: attention,
            IMAGES: augment(images, self.augment, generator) if generator is not None else eval_view(images,
                                                                                                    self.augment),
            PROPRIO: torch.from_numpy(np.stack([ep.proprio[e][t] for e, t in pairs])),
            ACTIONS: torch.from_numpy(chunks), ACTION_MASK: torch.from_numpy(mask),
        }
        batch.update({k: torch.from_numpy(np.stack(v)) for k, v in extra.items()})
        return batch

    def sample(self, seed: int, step: int, process: int, batch_size: int) -> dict[str, torch.Tensor]:
        """The training batch of one step and process: a pure function of its arguments (exact resume)."""
        rng = np.random.default_rng([seed, step, process])
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        return self.rows(rng.integers(0, len(self.episodes), batch_size), generator)

    def evaluation_rows(self, limit: int) -> np.ndarray:
        """Up to `limit` samples evenly spaced over the split (deterministic)."""
        count = len(self.episodes)
        return np.unique(np.linspace(0, count - 1, min(limit, count)).round().astype(np.int64))
