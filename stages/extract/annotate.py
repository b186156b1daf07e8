"""Batched inference over every step of every demo: LAM codes for (t, t+gap), action tokens for the chunk at t."""

from __future__ import annotations

import numpy as np
import torch

from common.action_vq.data import chunk_episode
from common.action_vq.model import ActionTokenizer
from common.demos import Stats
from common.lam.model import LatentActionModel
from common.latents.schema import CODES, PAD, TOKENS, VECTORS
from common.logs import progress
from common.normalize import normalize

LAM_PADDING = "where t+gap runs past the episode's last frame, the last frame is used as frame t+gap; pad marks it"


def frame_pairs(lengths: list[int], gap: int) -> np.ndarray:
    """(episode, t, t_next, pad) for every step of every episode, in order: (N, 4) int64."""
    rows = []
    for e, length in enumerate(lengths):
        t = np.arange(length)
        rows.append(np.stack([np.full(length, e), t, np.minimum(t + gap, length - 1), t + gap >= length], axis=1))
    return np.concatenate(rows).astype(np.int64)


@torch.no_grad()
def lam_codes(lam: LatentActionModel, frames: list[np.ndarray], gap: int, batch_size: int) -> list[dict]:
    """Per episode: codes (T, C) int32, code vectors (T, C, D) float32, pad (T,) bool."""
    lam.eval()
    pairs = frame_pairs([len(f) for f in frames], gap)
    codes, vectors = [], []
    for start in progress(range(0, len(pairs), batch_size), desc="lam codes"):
        rows = pairs[start : start + batch_size]
        first = torch.from_numpy(np.stack([frames[e][t] for e, t, _, _ in rows]))
        second = torch.from_numpy(np.stack([frames[e][n] for e, _, n, _ in rows]))
        latent, ids, _ = lam.encode(lam.features(first), lam.features(second))
        codes.append(ids.to(torch.int32).numpy())
        vectors.append(latent.float().numpy())
    return _split(pairs[:, 0], {CODES: np.concatenate(codes), VECTORS: np.concatenate(vectors),
                                PAD: pairs[:, 3].astype(bool)}, len(frames))


@torch.no_grad()
def action_tokens(tokenizer: ActionTokenizer, actions: list[np.ndarray], stats: Stats, normalization: str,
                  batch_size: int) -> list[dict]:
    """Per episode: tokens (T, tokens_per_chunk) int32 of the chunk at each step, pad (T, K) bool."""
    tokenizer.eval()
    chunks, pads = zip(*(chunk_episode(a, tokenizer.chunk) for a in actions))
    episode = np.concatenate([np.full(len(a), e) for e, a in enumerate(actions)])
    normalized = normalize(np.concatenate(chunks), stats, normalization)  # (N, K, A)
    tokens = []
    for start in progress(range(0, len(normalized), batch_size), desc="action tokens"):
        latent = tokenizer.latents(torch.from_numpy(normalized[start : start + batch_size]))
        tokens.append(tokenizer.quantize(latent)[1].to(torch.int32).numpy())
    return _split(episode, {TOKENS: np.concatenate(tokens), PAD: np.concatenate(pads)}, len(actions))


def _split(episode: np.ndarray, arrays: dict[str, np.ndarray], count: int) -> list[dict]:
    """Rows grouped by episode (rows are in episode order) -> one dict of arrays per episode."""
    bounds = np.searchsorted(episode, np.arange(count + 1))
    return [{k: np.ascontiguousarray(v[bounds[e] : bounds[e + 1]]) for k, v in arrays.items()} for e in range(count)]
