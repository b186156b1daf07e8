"""Held-out scores of a VLA: action L1 (normalized and in environment units) and latent-token accuracy."""

from __future__ import annotations

import numpy as np
import torch

from common.demos.schema import Stats
from common.normalize import unnormalize
from common.vla.data import Batches
from common.vla.model import ACTION_MASK, ACTIONS, VLA, compute_losses


@torch.no_grad()
def evaluate(model: VLA, batches: Batches, limit: int, batch_size: int, action_stats: Stats,
             normalization: str) -> dict[str, float]:
    """Mean held-out L1 over up to `limit` evenly spaced samples (no augmentation: the evaluation view)."""
    model.eval()
    device = next(model.parameters()).device
    rows = batches.evaluation_rows(limit)
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    env_error, env_count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = {k: v.to(device) for k, v in batches.rows(rows[start : start + batch_size], None).items()}
        out = model(batch)
        for name, value in compute_losses(model, out, batch).items():
            sums[name] = sums.get(name, 0.0) + float(value) * len(batch[ACTIONS])
            counts[name] = counts.get(name, 0.0) + len(batch[ACTIONS])
        mask = batch[ACTION_MASK].cpu().numpy()
        predicted = unnormalize(out[ACTIONS].float().clamp(-1, 1).cpu().numpy(), action_stats, normalization)
        truth = unnormalize(batch[ACTIONS].cpu().numpy(), action_stats, normalization)
        env_error += float(np.abs(predicted - truth)[mask].sum())
        env_count += int(mask.sum()) * predicted.shape[-1]
    model.train()
    scores = {f"val_{k}": sums[k] / counts[k] for k in sums}
    scores["val_l1_env_units"] = env_error / max(env_count, 1)
    scores["val_samples"] = float(len(rows))
    return scores
