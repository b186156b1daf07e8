"""The LAM's training objective: next-frame reconstruction + VQ commitment + optional action regression."""

from __future__ import annotations

import math

import torch
from torch import nn

from common.lam.data import ACTIONS, FRAME_NEXT, FRAME_T
from common.lam.model import LatentActionModel


class LamWithActionHead(nn.Module):
    """The LAM plus the study's action-regression head: an MLP from the mean code vector to the action chunk."""

    def __init__(self, lam: LatentActionModel, gap: int, action_dim: int, weight: float, fraction: float):
        super().__init__()
        self.lam = lam
        self.weight = weight
        self.fraction = fraction
        code_dim = lam.params.code_dim
        self.action_head = nn.Sequential(nn.Linear(code_dim, 256), nn.GELU(), nn.Linear(256, gap * action_dim))

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss and its parts for one batch."""
        out = self.lam(batch[FRAME_T], batch[FRAME_NEXT])
        # Error relative to copying frame t: 1 means no better than a still image. Scale-free (pixels or DINOv2
        # features alike), and the few pixels that move are the whole signal instead of a rounding error next
        # to the other losses and the gradient clip.
        copy_error = nn.functional.mse_loss(out.source, out.target).detach().clamp_min(1e-8)
        reconstruction = nn.functional.mse_loss(out.prediction, out.target) / copy_error
        loss = reconstruction + out.vq_loss
        metrics = {"relative_reconstruction": float(reconstruction.detach()), "commitment": float(out.vq_loss.detach())}
        if self.weight > 0:
            # Supervise only a small share of the batch, as the study does: the latent must stay mostly
            # self-supervised.
            n = max(1, math.ceil(self.fraction * out.latent.shape[0]))
            chunk = batch[ACTIONS][:n].flatten(1)  # (n, gap*A)
            predicted = self.action_head(out.latent[:n].mean(dim=1))
            action = nn.functional.mse_loss(predicted, chunk)
            loss = loss + self.weight * action
            metrics["action"] = float(action.detach())
        usage = torch.unique(out.codes).numel() / self.lam.params.codebook_size
        metrics["batch_code_usage"] = usage
        return loss, metrics


def lam_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Adapter for common.train.train (the model may be wrapped by accelerate)."""
    return model(batch)
