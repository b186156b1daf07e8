"""What the token strategies (la_direct, la_cond, la_tok) share: their params, and cross-entropy on latent tokens
read from the LM head at the supervised placeholders (shifted by one, as in next-token prediction)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from common.config import Problem
from common.latents.schema import CODES
from common.vla.batch import IGNORE, TOKENS
from common.vla.strategies.base import LAM_TOKEN, Gather, Layout, Strategy, non_negative


@dataclasses.dataclass(frozen=True)
class TokenCfg:
    """`strategy_cfg.<la_direct|la_cond|la_tok>`: the action loss plus token cross-entropy."""

    action_weight: float
    token_weight: float

    def problems(self) -> list[Problem]:
        """Range checks."""
        return non_negative(self)


class TokenStrategy(Strategy):
    """A strategy that predicts latent tokens at the first `layout.token_slots` placeholders."""

    cfg = TokenCfg

    def outputs(self, model: Any, hidden: tuple[torch.Tensor, ...], last: torch.Tensor, positions: torch.Tensor,
                gather: Gather) -> dict[str, torch.Tensor]:
        """Token logits (B, slots, vocab): the state before each supervised placeholder predicts its token."""
        before = positions[:, : model.layout.token_slots] - 1
        return {TOKENS: model.backbone.token_logits(gather(last, before))}

    def loss_terms(self, model: Any, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
                   ) -> dict[str, torch.Tensor]:
        """Token cross-entropy and accuracy (targets past an episode's end ignored)."""
        targets = model.token_targets(batch[TOKENS])
        logits = out[TOKENS].float().flatten(0, 1)
        keep = targets.flatten() != IGNORE
        return {"token_ce": F.cross_entropy(logits, targets.flatten(), ignore_index=IGNORE),
                "token_acc": (logits.argmax(-1)[keep] == targets.flatten()[keep]).float().mean()}

    def loss(self, cfg: Any, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted action L1 plus weighted token cross-entropy."""
        return super().loss(cfg, terms) + cfg.token_weight * terms["token_ce"]


class LamTokenStrategy(TokenStrategy):
    """A token strategy on the LAM's codes: <ACT_i> tokens, targets the codes of the K transitions ahead."""

    latent = "lam"

    def vocabulary(self, latent_meta: dict[str, Any]) -> tuple[str, ...]:
        """One <ACT_i> per LAM code."""
        return tuple(LAM_TOKEN.format(i) for i in range(int(latent_meta["codebook_size"])))

    def targets(self, arrays: dict[str, np.ndarray], t: int, chunk: int, layout: Layout) -> dict[str, np.ndarray]:
        """The codes of transitions t..t+K-1, step-major (C per step), IGNORE past the episode's end."""
        codes = arrays[CODES]  # (T, C)
        ahead = codes[t : t + chunk].astype(np.int64)
        padded = np.full((chunk, codes.shape[1]), IGNORE, np.int64)
        padded[: len(ahead)] = ahead
        return {TOKENS: padded.reshape(-1)[: layout.token_slots]}
