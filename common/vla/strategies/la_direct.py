"""`la_direct`: C x K placeholders predict the LAM's codes; the head reads them all, pooled per C to K."""

from __future__ import annotations

from typing import Any

from common.vla.strategies import register
from common.vla.strategies.base import Layout
from common.vla.strategies.tokens import LamTokenStrategy


@register
class LaDirect(LamTokenStrategy):
    """Token CE on all C x K placeholders."""

    name = "la_direct"

    def layout(self, chunk: int, latent_meta: dict[str, Any], per_step: int) -> Layout:
        """C x K placeholders, supervised and pooled per transition."""
        codes = int(latent_meta["codes_per_transition"])
        return Layout(placeholders=codes * chunk, token_slots=codes * chunk, align_slots=0, head_from=0, pool=codes)
