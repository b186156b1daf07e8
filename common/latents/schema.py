"""The latent sidecar format (see /work/coord/contracts.md): one HDF5 file per latent kind, keyed by demo.

    / attrs: meta (JSON: kind, dataset_sha256, model_sha256, sizes, padding, code_version)
    /data/demo_<i>/...             the same demo names as the demonstration file
      lam:        codes (T, C) int32, vectors (T, C, code_dim) float32, pad (T,) bool
      action_vq:  tokens (T, tokens_per_chunk) int32, pad (T, K) bool

`pad` says where the latent of step t looked past the episode end: frame t+gap beyond the last frame (the last
frame is used instead), or chunk steps beyond the last action (the last action is repeated).
"""

from __future__ import annotations

import dataclasses

import numpy as np

ATTR_META = "meta"
DATA = "data"
CODES, VECTORS, TOKENS, PAD = "codes", "vectors", "tokens", "pad"
LAM, ACTION_VQ = "lam", "action_vq"


@dataclasses.dataclass(frozen=True)
class Field:
    """One per-demo dataset: its dtype and its shape after T, as meta keys (or fixed ints)."""

    name: str
    dtype: type
    shape: tuple[str | int, ...]


@dataclasses.dataclass(frozen=True)
class Kind:
    """What a sidecar of one latent kind holds."""

    name: str
    required_meta: tuple[str, ...]
    fields: tuple[Field, ...]
    ids: str  # the field of token/code ids
    vocab_key: str  # the meta key of the vocabulary size they must stay below


COMMON_META = ("kind", "dataset_sha256", "model_sha256", "padding", "code_version")
KINDS = {
    LAM: Kind(
        LAM,
        COMMON_META + ("gap", "codebook_size", "codes_per_transition", "code_dim", "camera"),
        (Field(CODES, np.int32, ("codes_per_transition",)),
         Field(VECTORS, np.float32, ("codes_per_transition", "code_dim")),
         Field(PAD, np.bool_, ())),
        ids=CODES,
        vocab_key="codebook_size",
    ),
    ACTION_VQ: Kind(
        ACTION_VQ,
        COMMON_META + ("chunk", "tokens_per_chunk", "vocab_size", "action_dim", "normalization"),
        (Field(TOKENS, np.int32, ("tokens_per_chunk",)), Field(PAD, np.bool_, ("chunk",))),
        ids=TOKENS,
        vocab_key="vocab_size",
    ),
}


def kind_of(name: str) -> Kind:
    """The schema of a latent kind, with a clear error for an unknown name."""
    if name not in KINDS:
        raise ValueError(f"unknown latent kind {name!r}; use one of {sorted(KINDS)}")
    return KINDS[name]


def expected_shape(field: Field, length: int, meta: dict) -> tuple[int, ...]:
    """The full shape a field must have for a demo of `length` steps."""
    return (length, *(meta[d] if isinstance(d, str) else d for d in field.shape))
