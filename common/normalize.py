"""Per-dimension normalization of actions and proprio to [-1, 1] from the collect stage's statistics."""

from __future__ import annotations

import numpy as np

from common.demos.schema import Stats

_EPS = 1e-8


def bounds(stats: Stats, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The (low, high) that map to -1 and +1: 1st/99th percentiles ('quantile') or min/max ('minmax')."""
    if mode == "quantile":
        return stats.q01.astype(np.float32), stats.q99.astype(np.float32)
    if mode == "minmax":
        return stats.min.astype(np.float32), stats.max.astype(np.float32)
    raise ValueError(f"unknown normalization mode {mode!r}; use 'quantile' or 'minmax'")


def normalize(values: np.ndarray, stats: Stats, mode: str) -> np.ndarray:
    """Map each dimension's [low, high] to [-1, 1], clipping outliers; constant dimensions map to 0."""
    low, high = bounds(stats, mode)
    span = np.maximum(high - low, _EPS)
    out = 2.0 * (np.asarray(values, np.float32) - low) / span - 1.0
    return np.where(high - low > _EPS, np.clip(out, -1.0, 1.0), 0.0).astype(np.float32)


def unnormalize(values: np.ndarray, stats: Stats, mode: str) -> np.ndarray:
    """Inverse of `normalize` (for values inside [-1, 1])."""
    low, high = bounds(stats, mode)
    return ((np.asarray(values, np.float32) + 1.0) / 2.0 * (high - low) + low).astype(np.float32)
