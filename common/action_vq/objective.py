"""The tokenizer's training objective: reconstruction MSE + masked-latent MSE + VQ commitment."""

from __future__ import annotations

import torch
from torch import nn

from common.action_vq.data import CHUNKS
from common.action_vq.model import ActionTokenizer


class TokenizerObjective(nn.Module):
    """Wraps the tokenizer so that one forward pass returns the loss and its parts (for common.train.train)."""

    def __init__(self, tokenizer: ActionTokenizer):
        super().__init__()
        self.tokenizer = tokenizer

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss and its parts for one batch of normalized chunks."""
        chunk = batch[CHUNKS]  # (B, K, A)
        out = self.tokenizer(chunk)
        reconstruction = nn.functional.mse_loss(out.reconstruction, chunk)
        loss = reconstruction + out.vq_loss
        params = self.tokenizer.params
        metrics = {"reconstruction": float(reconstruction.detach()), "commitment": float(out.vq_loss.detach())}
        if params.mask_ratio > 0 and params.mask_weight > 0:
            # Masked-latent loss: with some steps hidden at the input, the encoder must still produce the latents
            # it gives the full chunk, so each token carries context from its neighbours.
            mask = torch.rand(chunk.shape[:2], device=chunk.device) < params.mask_ratio  # (B, K)
            masked = self.tokenizer.latents(chunk, mask)
            token_mask = mask.reshape(mask.shape[0], self.tokenizer.positions, -1).any(-1)  # (B, K/s)
            if token_mask.any():
                error = (masked - out.latent.detach()).pow(2).mean(-1)  # (B, K/s)
                masked_loss = error[token_mask].mean()
                loss = loss + params.mask_weight * masked_loss
                metrics["masked_latent"] = float(masked_loss.detach())
        metrics["batch_code_usage"] = torch.unique(out.tokens).numel() / params.vocab_size
        return loss, metrics


def tokenizer_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Adapter for common.train.train (the model may be wrapped by accelerate)."""
    return model(batch)
