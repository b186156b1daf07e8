"""`baseline`: P x K placeholders, all read by the action head, trained on the action L1 alone."""

from __future__ import annotations

import dataclasses
from typing import Any

from common.config import Problem
from common.vla.strategies import register
from common.vla.strategies.base import Layout, Strategy, non_negative


@dataclasses.dataclass(frozen=True)
class PlainCfg:
    """`strategy_cfg.baseline`: only the action loss."""

    action_weight: float

    def problems(self) -> list[Problem]:
        """Range checks."""
        return non_negative(self)


@register
class Baseline(Strategy):
    """No latent: `per_step` (finetune.placeholders_per_step) x chunk placeholders (the study: 5K)."""

    name, latent, cfg = "baseline", "none", PlainCfg

    def layout(self, chunk: int, latent_meta: dict[str, Any], per_step: int) -> Layout:
        """P x K placeholders, every one to the head."""
        n = per_step * chunk
        return Layout(placeholders=n, token_slots=0, align_slots=0, head_from=0, pool=1)
