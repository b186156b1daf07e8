"""`la_tok`: one placeholder per action-tokenizer token of the chunk, each predicting its <LA_i>."""

from __future__ import annotations

from typing import Any

import numpy as np

from common.latents.schema import TOKENS as SIDECAR_TOKENS
from common.vla.batch import TOKENS
from common.vla.strategies import register
from common.vla.strategies.base import ACTION_TOKEN, Layout
from common.vla.strategies.tokens import TokenStrategy


@register
class LaTok(TokenStrategy):
    """Token CE on every placeholder; the head reads them all."""

    name, latent = "la_tok", "action_vq"

    def layout(self, chunk: int, latent_meta: dict[str, Any], per_step: int) -> Layout:
        """tokens_per_chunk placeholders."""
        n = int(latent_meta["tokens_per_chunk"])
        return Layout(placeholders=n, token_slots=n, align_slots=0, head_from=0, pool=1)

    def vocabulary(self, latent_meta: dict[str, Any]) -> tuple[str, ...]:
        """One <LA_i> per action-tokenizer code."""
        return tuple(ACTION_TOKEN.format(i) for i in range(int(latent_meta["vocab_size"])))

    def targets(self, arrays: dict[str, np.ndarray], t: int, chunk: int, layout: Layout) -> dict[str, np.ndarray]:
        """The action tokens of the chunk starting at t."""
        return {TOKENS: arrays[SIDECAR_TOKENS][t].astype(np.int64)}
