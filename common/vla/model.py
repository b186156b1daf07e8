"""The VLA: backbone -> placeholder states -> bridge-attention action head, plus what its strategy predicts.

One forward pass decodes every placeholder in parallel; actions always come from the L1 head. The strategy
(common/vla/strategies) says which placeholders the head reads, what else is predicted, and its loss terms.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import nn

from common.vla.backbone import Backbone
from common.vla.batch import (ACTION_MASK, ACTIONS, ALIGN, ATTENTION, IGNORE, IMAGES, INPUT_IDS, PROPRIO,
                              TOKENS)
from common.vla.head import BridgeActionHead, HeadParams
from common.vla.strategies import PLACEHOLDER, Layout, Strategy

__all__ = ["ACTION_MASK", "ACTIONS", "ALIGN", "ATTENTION", "IGNORE", "IMAGES", "INPUT_IDS", "PROPRIO", "TOKENS", "VLA",
           "compute_losses", "objective"]


class VLA(nn.Module):
    """Backbone + action head (+ the strategy's own modules); `forward` returns predictions, not losses."""

    def __init__(self, backbone: Backbone, strategy: Strategy, layout: Layout, head: HeadParams, chunk: int,
                 action_dim: int, proprio_dim: int, latent_tokens: tuple[str, ...], width: int,
                 latent_meta: dict[str, Any]):
        super().__init__()
        self.backbone, self.strategy, self.layout, self.chunk = backbone, strategy, layout, chunk
        self.placeholder_id = backbone.token_id(PLACEHOLDER)
        self.blocks = head.blocks(backbone.num_layers)
        if self.blocks > backbone.num_layers:
            raise ValueError(f"head.depth {self.blocks} exceeds the backbone's {backbone.num_layers} layers")
        self.head = BridgeActionHead(backbone.hidden_size, head, self.blocks, chunk, action_dim, proprio_dim)
        # latent code i -> the token id of its vocabulary entry (<ACT_i> or <LA_i>)
        ids = [backbone.token_id(t) for t in latent_tokens]
        self.register_buffer("latent_ids", torch.tensor(ids or [0], dtype=torch.long), persistent=False)
        # the strategy's own modules (la_align's projector, `align`), created after the head: init draws follow it
        for name, module in strategy.modules(backbone.hidden_size, width, latent_meta).items():
            self.add_module(name, module)

    def placeholder_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, n) positions of the placeholder tokens, found by id; a wrong count is an internal error."""
        batch = input_ids.shape[0]
        rows, cols = (input_ids == self.placeholder_id).nonzero(as_tuple=True)
        if rows.numel() != batch * self.layout.placeholders:
            raise ValueError(f"expected {self.layout.placeholders} placeholders per prompt, found {rows.numel()} "
                             f"in a batch of {batch}")
        return cols.view(batch, self.layout.placeholders)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Predicted normalized actions (B, K, A), plus token logits / aligned vectors where the strategy has them."""
        ids, mask = batch[INPUT_IDS], batch[ATTENTION]
        hidden, last = self.backbone(ids, mask, batch[IMAGES])
        positions = self.placeholder_positions(ids)  # (B, n)
        gather = lambda h, pos: torch.gather(h, 1, pos.unsqueeze(-1).expand(-1, -1, h.shape[-1]))  # noqa: E731
        context_mask = mask.bool() & (ids != self.placeholder_id)  # visual + task tokens
        read = hidden[-self.blocks :]
        placeholders = [self.strategy.head_inputs(gather(h, positions), self.layout) for h in read]
        out = {ACTIONS: self.head(placeholders, list(read), context_mask, batch[PROPRIO].float())}
        out.update(self.strategy.outputs(self, hidden, last, positions, gather))
        return out

    def token_targets(self, codes: torch.Tensor) -> torch.Tensor:
        """Latent codes (B, slots) with IGNORE past the episode end -> vocabulary token ids (IGNORE kept)."""
        ignored = codes == IGNORE
        return torch.where(ignored, torch.full_like(codes, IGNORE), self.latent_ids[codes.clamp(min=0)])


def objective(cfg: Any) -> Callable[[nn.Module, Mapping[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]:
    """The training loss for a strategy's cfg: the model's strategy weighs its terms (action L1 and its own)."""

    def loss_fn(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        vla = _unwrap(model)
        terms = compute_losses(vla, model(batch), batch)
        return vla.strategy.loss(cfg, terms), {k: float(v.detach()) for k, v in terms.items()}

    return loss_fn


def compute_losses(model: VLA, out: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
                   ) -> dict[str, torch.Tensor]:
    """Unweighted loss terms: masked L1 on normalized actions, then the strategy's (token CE and accuracy, ...)."""
    valid = batch[ACTION_MASK].unsqueeze(-1).float()  # (B, K, 1)
    error = (out[ACTIONS].float() - batch[ACTIONS]).abs() * valid
    terms = {"l1": error.sum() / (valid.sum() * error.shape[-1]).clamp(min=1)}
    terms.update(model.strategy.loss_terms(model, out, batch))
    return terms


def _unwrap(model: nn.Module) -> VLA:
    """The VLA inside an accelerate/DDP wrapper."""
    return model.module if hasattr(model, "module") and not isinstance(model, VLA) else model
