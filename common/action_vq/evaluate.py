"""Held-out evaluation of an action tokenizer, in the original action units.

- reconstruction: MSE, RMSE, mean and max absolute error per action dimension (padding steps excluded), each also
  as a share of the dimension's range in the training data (the target: at most 2% of the range);
- code usage (share of the vocabulary used) and perplexity of the held-out tokens, and usage on training chunks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from common.action_vq.data import ActionChunks
from common.action_vq.model import ActionTokenizer
from common.demos import Stats
from common.lam.evaluate import per_level_statistics
from common.normalize import unnormalize


@torch.no_grad()
def tokenize(tokenizer: ActionTokenizer, chunks: np.ndarray, batch_size: int = 1024) -> dict[str, np.ndarray]:
    """Token ids (N, K/s), code vectors (N, K/s, code_dim) and normalized reconstructions (N, K, A)."""
    tokenizer.eval()
    device = next(tokenizer.parameters()).device
    tokens, vectors, recon = [], [], []
    for start in range(0, len(chunks), batch_size):
        out = tokenizer(torch.from_numpy(chunks[start : start + batch_size]).to(device))
        tokens.append(out.tokens.cpu())
        vectors.append(out.vectors.cpu())
        recon.append(out.reconstruction.cpu())
    return {"tokens": torch.cat(tokens).numpy(), "vectors": torch.cat(vectors).numpy(),
            "reconstruction": torch.cat(recon).numpy()}


def reconstruction_errors(reconstruction: np.ndarray, raw: np.ndarray, pad: np.ndarray, stats: Stats,
                          normalization: str, names: tuple[str, ...]) -> dict[str, Any]:
    """Errors of normalized reconstructions (N, K, A) against the raw chunks, in action units, real steps only."""
    error = (unnormalize(reconstruction, stats, normalization) - raw)[~pad]  # (M, A)
    span = np.maximum(stats.max - stats.min, 1e-8).astype(np.float64)
    mse = (error.astype(np.float64) ** 2).mean(0)
    mae = np.abs(error).astype(np.float64).mean(0)
    max_abs = np.abs(error).max(0).astype(np.float64)
    per_dim = {
        name: {"mse": float(mse[i]), "rmse": float(np.sqrt(mse[i])), "mae": float(mae[i]), "max_abs": float(max_abs[i]),
               "range": float(span[i]), "rmse_share_of_range": float(np.sqrt(mse[i]) / span[i]),
               "mae_share_of_range": float(mae[i] / span[i]), "max_abs_share_of_range": float(max_abs[i] / span[i])}
        for i, name in enumerate(names)
    }
    return {
        "reconstruction_mse": float(mse.mean()),
        "reconstruction_max_abs": float(max_abs.max()),
        "worst_rmse_share_of_range": float((np.sqrt(mse) / span).max()),
        "worst_mae_share_of_range": float((mae / span).max()),
        "per_dimension": per_dim,
        "scored_steps": int(len(error)),
    }


def level_statistics(tokens: np.ndarray, vocab: int, levels: int) -> dict[str, Any]:
    """Code usage and perplexity of (N, tokens) ids, a step's `levels` residual codes adjacent: each level's
    codebook on its own, averaged (and per level)."""
    return per_level_statistics([tokens[:, level::levels] for level in range(levels)], vocab)


def evaluate(tokenizer: ActionTokenizer, train: ActionChunks, val: ActionChunks, stats: Stats, normalization: str,
             names: tuple[str, ...]) -> dict[str, Any]:
    """All held-out metrics of a trained tokenizer."""
    held = tokenize(tokenizer, val.chunks)
    seen = tokenize(tokenizer, train.chunks)
    vocab, levels = tokenizer.params.vocab_size, tokenizer.params.residual_levels
    usage = level_statistics(held["tokens"], vocab, levels)
    return {
        "heldout_chunks": int(len(val)),
        "heldout_episodes": int(len(val.names)),
        **reconstruction_errors(held["reconstruction"], val.raw, val.pad, stats, normalization, names),
        "code_usage": usage["code_usage"],
        "perplexity": usage["perplexity"],
        "code_usage_per_level": usage["code_usage_per_level"],
        "train_code_usage": level_statistics(seen["tokens"], vocab, levels)["code_usage"],
        "train_reconstruction_mse": reconstruction_errors(seen["reconstruction"], train.raw, train.pad, stats,
                                                          normalization, names)["reconstruction_mse"],
        "tokens_per_chunk": int(tokenizer.tokens_per_chunk),
        "vocab_size": int(vocab),
    }
