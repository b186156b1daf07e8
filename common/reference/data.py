"""The reference policy's samples: observation at step t (images, proprio, task) -> actions t..t+K-1.

Every sample of a split is held in flat arrays (about 230 MB of images for the default study), so a batch is a
gather. A training batch is a pure function of (seed, step, process), random shift included, so resume is exact.

Deliberately not common.vla.data: that module brings the VLA's prompts, latents and model code along, and a
dependency on it would retrain this yardstick whenever the VLA's code changes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from common.demos import DatasetError, DemoReader
from common.demos.schema import Stats
from common.normalize import normalize, unnormalize
from common.reference.model import ACTION_MASK, ACTIONS, IMAGES, PROPRIO, TASK, masked_l1, random_shift


@dataclasses.dataclass(frozen=True)
class Samples:
    """One split, flattened over episodes and steps (N samples)."""

    images: np.ndarray  # (N, cams, H, W, 3) uint8
    proprio: np.ndarray  # (N, P) float32, normalized
    task: np.ndarray  # (N,) int64 index into the task list
    actions: np.ndarray  # (N, K, A) float32, normalized; zeros past the episode's end
    mask: np.ndarray  # (N, K) bool: False past the episode's end
    episodes: int

    def __len__(self) -> int:
        return len(self.task)


def chunks(actions: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, A) actions -> (T, K, A) the next K actions of each step, zero-padded, and the (T, K) mask."""
    steps = len(actions)
    ahead = np.arange(steps)[:, None] + np.arange(chunk)  # (T, K)
    mask = ahead < steps
    return np.where(mask[..., None], actions[np.minimum(ahead, steps - 1)], 0.0).astype(np.float32), mask


def load_samples(path: Path, split: str, cameras: tuple[str, ...], tasks: tuple[str, ...], chunk: int,
                 action_stats: Stats, proprio_stats: Stats, normalization: str, *, val_fraction: float) -> Samples:
    """Every step of one split's episodes as samples; a task outside `tasks` is a DatasetError (`val_fraction`:
    `study.val_fraction`)."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("images", "proprio", "task", "actions", "mask")}
    episodes = 0
    with DemoReader(path, val_fraction) as reader:
        for name in reader.names:
            episode = reader.episode(name, cameras=cameras)
            if episode.split != split:
                continue
            if episode.task not in tasks:
                raise DatasetError(f"{path}: {name} has task {episode.task!r}, not one of the dataset's {list(tasks)}. "
                                   "Next step: rerun `dvc repro collect`")
            episodes += 1
            actions, mask = chunks(normalize(episode.actions, action_stats, normalization), chunk)
            parts["images"].append(np.stack([episode.images[c] for c in cameras], axis=1))
            parts["proprio"].append(normalize(episode.proprio_vector(reader.meta.proprio_keys), proprio_stats,
                                              normalization))
            parts["task"].append(np.full(episode.length, tasks.index(episode.task), np.int64))
            parts["actions"].append(actions)
            parts["mask"].append(mask)
    if not episodes:
        raise DatasetError(f"{path}: no '{split}' episodes. Next step: rerun `dvc repro collect` with "
                           "val_demos_per_task > 0 (the reference stage scores held-out episodes)")
    return Samples(**{k: np.concatenate(v) for k, v in parts.items()}, episodes=episodes)


def batch_of(samples: Samples, rows: np.ndarray, images: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """Samples `rows` as tensors (`images` replaces theirs, e.g. augmented)."""
    return {IMAGES: torch.from_numpy(samples.images[rows] if images is None else images),
            PROPRIO: torch.from_numpy(samples.proprio[rows]), TASK: torch.from_numpy(samples.task[rows]),
            ACTIONS: torch.from_numpy(samples.actions[rows]), ACTION_MASK: torch.from_numpy(samples.mask[rows])}


def training_batch(samples: Samples, seed: int, step: int, process: int, batch_size: int,
                   shift: int) -> dict[str, torch.Tensor]:
    """The batch of one training step and process: uniform samples, randomly shifted images."""
    rng = np.random.default_rng([seed, step, process])
    rows = rng.integers(0, len(samples), batch_size)
    return batch_of(samples, rows, random_shift(samples.images[rows], shift, rng))


def evaluation_rows(count: int, limit: int) -> np.ndarray:
    """Up to `limit` of `count` samples, evenly spaced (deterministic)."""
    return np.unique(np.linspace(0, count - 1, min(limit, count)).round().astype(np.int64))


@torch.no_grad()
def held_out_l1(model: torch.nn.Module, samples: Samples, limit: int, batch_size: int, action_stats: Stats,
                normalization: str) -> dict[str, float]:
    """Mean L1 on up to `limit` held-out samples, normalized and in environment units (no augmentation)."""
    was_training = model.training
    model.eval()
    rows = evaluation_rows(len(samples), limit)
    total, env_total, count = 0.0, 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = batch_of(samples, rows[start : start + batch_size])
        predicted = model(batch).clamp(-1, 1)  # the policy clamps the same way
        steps = int(batch[ACTION_MASK].sum()) * predicted.shape[-1]
        total += float(masked_l1(predicted, batch)) * steps
        mask = batch[ACTION_MASK].numpy()
        env = np.abs(unnormalize(predicted.numpy(), action_stats, normalization)
                     - unnormalize(batch[ACTIONS].numpy(), action_stats, normalization))
        env_total += float(env[mask].sum())
        count += steps
    model.train(was_training)
    return {"val_l1": total / max(count, 1), "val_l1_env_units": env_total / max(count, 1),
            "val_samples": float(len(rows))}
