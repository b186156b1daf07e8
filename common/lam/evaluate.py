"""Held-out evaluation of a latent action model.

- reconstruction: MSE of the predicted next-frame target (and PSNR for pixel targets in [0, 1]);
- controllability gap: the same error with the latent of another pair minus the error with the pair's own latent;
  it must be positive, or the decoder ignores the latent; its 95% CI resamples held-out episodes;
- code usage (share of the codebook used) and perplexity of the codes on held-out pairs;
- probes: linear and MLP regressions from the latent to the true action chunk between t and t+gap, fit on
  training episodes and scored (R^2) on held-out ones.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from common.lam.data import ACTIONS, FRAME_NEXT, FRAME_T, FramePairs
from common.lam.model import LatentActionModel
from common.probes import linear_probe, mlp_probe


def spread_rows(count: int, limit: int) -> np.ndarray:
    """At most `limit` row indices spread evenly over range(count)."""
    if count <= limit:
        return np.arange(count)
    return np.linspace(0, count - 1, limit).round().astype(np.int64)


def derangement(count: int, seed: int) -> np.ndarray:
    """source[i] != i for every i (count > 1): a cyclic shift along a random order."""
    order = np.random.default_rng(seed).permutation(count)
    source = np.empty(count, np.int64)
    source[order] = np.roll(order, 1)
    return source


@torch.no_grad()
def encode_pairs(model: LatentActionModel, pairs: FramePairs, rows: np.ndarray, seed: int,
                 batch_size: int = 256) -> dict[str, np.ndarray]:
    """Latents, codes, action chunks and per-pair errors (with the pair's own latent, and another pair's)."""
    model.eval()
    device = next(model.parameters()).device
    latents, codes, errors, actions = [], [], [], []
    for start in range(0, len(rows), batch_size):
        batch = pairs.batch(rows[start : start + batch_size])
        out = model(batch[FRAME_T].to(device), batch[FRAME_NEXT].to(device))
        latents.append(out.latent)
        codes.append(out.codes.cpu())
        errors.append(((out.prediction - out.target) ** 2).mean(dim=(1, 2)).cpu())
        actions.append(batch[ACTIONS].flatten(1))
    latent = torch.cat(latents)  # (M, Q, C)
    source = derangement(len(rows), seed)
    other = []
    for start in range(0, len(rows), batch_size):
        idx = np.arange(start, min(start + batch_size, len(rows)))
        batch = pairs.batch(rows[idx])
        first = model.features(batch[FRAME_T].to(device))
        target = model.features(batch[FRAME_NEXT].to(device))
        prediction = model.decode(first, latent[source[idx]])
        other.append(((prediction - target) ** 2).mean(dim=(1, 2)).cpu())
    return {
        "latent": latent.flatten(1).cpu().numpy(),
        "codes": torch.cat(codes).numpy(),
        "error": torch.cat(errors).numpy(),
        "error_other": torch.cat(other).numpy(),
        "episode": pairs.index[rows, 0],
        "actions": torch.cat(actions).numpy(),
    }


def episode_bootstrap_ci(values: np.ndarray, episodes: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """95% interval of the mean of `values`, resampling whole episodes (pairs within one are correlated)."""
    ids = np.unique(episodes)
    sums = np.array([values[episodes == e].sum() for e in ids])
    counts = np.array([(episodes == e).sum() for e in ids])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ids), (resamples, len(ids)))
    means = sums[draws].sum(1) / counts[draws].sum(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def code_statistics(codes: np.ndarray, codebook_size: int) -> dict[str, float]:
    """Share of the codebook used and the perplexity of the code distribution."""
    counts = np.bincount(codes.ravel(), minlength=codebook_size).astype(np.float64)
    p = counts / counts.sum()
    entropy = -(p[p > 0] * np.log(p[p > 0])).sum()
    return {"code_usage": float((counts > 0).mean()), "perplexity": float(math.exp(entropy))}


def per_level_statistics(levels: list[np.ndarray], codebook_size: int) -> dict[str, Any]:
    """Code usage and perplexity of residual levels' codes (one array per level), each level's codebook on its own:
    the means over levels, and each level's."""
    stats = [code_statistics(codes, codebook_size) for codes in levels]
    return {
        "code_usage": float(np.mean([s["code_usage"] for s in stats])),
        "perplexity": float(np.mean([s["perplexity"] for s in stats])),
        "code_usage_per_level": [s["code_usage"] for s in stats],
        "perplexity_per_level": [s["perplexity"] for s in stats],
    }


def latent_code_statistics(codes: np.ndarray, params: Any) -> dict[str, Any]:
    """Code usage and perplexity of a LAM's (M, Q) codes; for residual levels, each level's codebook on its own."""
    if params.quantizer == "per_query":
        return code_statistics(codes, params.codebook_size)
    return per_level_statistics([codes[:, level] for level in range(codes.shape[1])], params.codebook_size)


def evaluate(model: LatentActionModel, untrained: LatentActionModel, train_pairs: FramePairs,
             val_pairs: FramePairs, params: Any, pixels: bool, seed: int) -> dict[str, Any]:
    """All held-out metrics of a trained LAM, with the probes of an untrained one as the floor."""
    val_rows = spread_rows(len(val_pairs), params.max_pairs)
    train_rows = spread_rows(len(train_pairs), params.probe_train_pairs)
    val = encode_pairs(model, val_pairs, val_rows, seed)
    gap = val["error_other"] - val["error"]
    mse = float(val["error"].mean())
    metrics: dict[str, Any] = {
        "heldout_pairs": int(len(val_rows)),
        "heldout_episodes": int(len(np.unique(val["episode"]))),
        "reconstruction_mse": mse,
        "reconstruction_mse_other_latent": float(val["error_other"].mean()),
        "psnr_db": 10 * math.log10(1.0 / mse) if pixels else None,
        "controllability_gap": float(gap.mean()),
        "controllability_gap_ci95": episode_bootstrap_ci(gap, val["episode"], params.bootstrap, seed),
        **latent_code_statistics(val["codes"], model.params),
    }
    for name, lam in (("trained", model), ("untrained", untrained)):
        train = encode_pairs(lam, train_pairs, train_rows, seed)
        held = val if lam is model else encode_pairs(lam, val_pairs, val_rows, seed)
        metrics[f"probe_linear_r2_{name}"] = linear_probe(train["latent"], train["actions"], held["latent"],
                                                          held["actions"])
        metrics[f"probe_mlp_r2_{name}"] = mlp_probe(train["latent"], train["actions"], held["latent"],
                                                    held["actions"], steps=params.probe_steps, seed=seed)
    return metrics
