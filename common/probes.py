"""Probes that ask how much of a target (e.g. the true action chunk) a representation holds.

Both are fit on training episodes and scored on held-out ones with the variance-weighted R^2:
1 - sum of squared errors / sum of squared deviations from the held-out mean, over all target dimensions.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def r2_score(target: np.ndarray, prediction: np.ndarray) -> float:
    """Variance-weighted R^2 over all dimensions of (N, D) arrays."""
    target, prediction = np.asarray(target, np.float64), np.asarray(prediction, np.float64)
    residual = ((target - prediction) ** 2).sum()
    total = ((target - target.mean(0)) ** 2).sum()
    return float(1.0 - residual / max(total, 1e-12))


def _standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train.mean(0), train.std(0) + 1e-6
    return (train - mean) / std, (test - mean) / std


def linear_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                 ridge: float = 1e-3) -> float:
    """Ridge regression (closed form, with intercept) on standardized inputs; held-out R^2."""
    a, b = _standardize(np.asarray(x_train, np.float64), np.asarray(x_test, np.float64))
    a = np.hstack([a, np.ones((len(a), 1))])
    b = np.hstack([b, np.ones((len(b), 1))])
    gram = a.T @ a + ridge * len(a) * np.eye(a.shape[1])
    weights = np.linalg.solve(gram, a.T @ np.asarray(y_train, np.float64))
    return r2_score(y_test, b @ weights)


def mlp_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
              hidden: int = 256, steps: int = 1500, lr: float = 1e-3, seed: int = 0) -> float:
    """A two-hidden-layer MLP trained with Adam (full batch, weight decay); held-out R^2."""
    generator = torch.Generator().manual_seed(seed)
    a, b = _standardize(np.asarray(x_train, np.float32), np.asarray(x_test, np.float32))
    x, y = torch.from_numpy(a.astype(np.float32)), torch.from_numpy(np.asarray(y_train, np.float32))
    net = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                        nn.Linear(hidden, y.shape[1]))
    with torch.no_grad():
        for p in net.parameters():  # seeded init, independent of the global RNG
            p.copy_(torch.randn(p.shape, generator=generator) * (0.02 if p.dim() == 1 else p.shape[-1] ** -0.5))
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(steps):
        loss = nn.functional.mse_loss(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        prediction = net(torch.from_numpy(b.astype(np.float32))).numpy()
    return r2_score(y_test, prediction)
