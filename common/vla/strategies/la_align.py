"""`la_align`: P x K placeholders; the first (P - 1) x K, pooled at the middle layer and projected, align with the
LAM's mean code vector; the head reads the last K."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.config import Problem
from common.latents.schema import VECTORS
from common.vla.batch import ALIGN
from common.vla.head import AlignProjector
from common.vla.strategies import register
from common.vla.strategies.base import Gather, Layout, Strategy, non_negative


@dataclasses.dataclass(frozen=True)
class AlignCfg:
    """`strategy_cfg.la_align`: the action loss plus the cosine alignment to the LAM's code vectors."""

    action_weight: float
    align_weight: float
    align_hidden: int  # width of the projector's hidden layer (the study: 256)

    def problems(self) -> list[Problem]:
        """Range checks."""
        return non_negative(self) + ([Problem("align_hidden", self.align_hidden, "must be at least 1", "e.g. 256")]
                                     if self.align_hidden < 1 else [])


@register
class LaAlign(Strategy):
    """1 - cos(projector(mean of the aligned placeholders' middle-layer states), mean LAM code vector)."""

    name, latent, cfg = "la_align", "lam", AlignCfg

    def layout(self, chunk: int, latent_meta: dict[str, Any], per_step: int) -> Layout:
        """P x K placeholders: the first (P - 1) x K aligned, the last K to the head."""
        if per_step < 2:
            raise ValueError(f"la_align aligns the first (placeholders_per_step - 1) x K placeholders and reads the "
                             f"last K: placeholders_per_step = {per_step} leaves none to align; use 2 or more")
        n = per_step * chunk
        return Layout(placeholders=n, token_slots=0, align_slots=n - chunk, head_from=n - chunk, pool=1)

    def module_width(self, cfg: Any) -> int:
        """The projector's hidden width."""
        return int(cfg.align_hidden)

    def modules(self, hidden_size: int, width: int, latent_meta: dict[str, Any]) -> dict[str, nn.Module]:
        """The projector into the LAM's code space (`align.*` in the state dict)."""
        return {"align": AlignProjector(hidden_size, width, int(latent_meta["code_dim"]))}

    def targets(self, arrays: dict[str, np.ndarray], t: int, chunk: int, layout: Layout) -> dict[str, np.ndarray]:
        """The mean of the LAM's code vectors at step t."""
        return {ALIGN: arrays[VECTORS][t].mean(0).astype(np.float32)}

    def outputs(self, model: Any, hidden: tuple[torch.Tensor, ...], last: torch.Tensor, positions: torch.Tensor,
                gather: Gather) -> dict[str, torch.Tensor]:
        """The projected mean middle-layer state of the aligned placeholders (B, code_dim)."""
        middle = hidden[model.backbone.num_layers // 2]
        pooled = gather(middle, positions[:, : model.layout.align_slots]).mean(1)  # (B, D)
        return {ALIGN: model.align(pooled)}

    def loss_terms(self, model: Any, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
                   ) -> dict[str, torch.Tensor]:
        """1 - cosine similarity, averaged over the batch."""
        return {"align": 1 - F.cosine_similarity(out[ALIGN].float(), batch[ALIGN], dim=-1).mean()}

    def loss(self, cfg: Any, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted action L1 plus weighted alignment."""
        return super().loss(cfg, terms) + cfg.align_weight * terms["align"]
