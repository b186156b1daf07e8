"""`la_cond`: C x K placeholders predict the LAM's codes, then K more; the head reads all of them."""

from __future__ import annotations

from typing import Any

from common.vla.strategies import register
from common.vla.strategies.base import Layout
from common.vla.strategies.tokens import LamTokenStrategy


@register
class LaCond(LamTokenStrategy):
    """Token CE on the first C x K placeholders."""

    name = "la_cond"

    def layout(self, chunk: int, latent_meta: dict[str, Any], per_step: int) -> Layout:
        """C x K supervised placeholders followed by K unsupervised ones."""
        codes = int(latent_meta["codes_per_transition"])
        return Layout(placeholders=codes * chunk + chunk, token_slots=codes * chunk, align_slots=0, head_from=0,
                      pool=1)
