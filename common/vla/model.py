"""The VLA: backbone -> placeholder states -> bridge-attention action head, with the strategy's latent losses.

One forward pass decodes every placeholder in parallel; actions always come from the L1 head. Token losses
read the LM head only at the positions they supervise (shifted by one, as in next-token prediction).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from common.vla.backbone import Backbone
from common.vla.head import AlignProjector, BridgeActionHead, HeadParams
from common.vla.strategies import PLACEHOLDER, Layout, Strategy

# Batch keys (tensors on the model's device).
INPUT_IDS, ATTENTION, IMAGES, PROPRIO = "input_ids", "attention_mask", "images", "proprio"
ACTIONS, ACTION_MASK, TOKENS, ALIGN = "actions", "action_mask", "latent_tokens", "align_target"
IGNORE = -100  # token targets past an episode's end


class VLA(nn.Module):
    """Backbone + action head (+ align projector for la_align); `forward` returns predictions, not losses."""

    def __init__(self, backbone: Backbone, strategy: Strategy, layout: Layout, head: HeadParams, chunk: int,
                 action_dim: int, proprio_dim: int, latent_tokens: tuple[str, ...], align: tuple[int, int] | None):
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
        self.align = AlignProjector(backbone.hidden_size, align[0], align[1]) if align else None

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
        if self.layout.token_slots:
            # Shifted by one: the state before each supervised placeholder predicts its latent token.
            before = positions[:, : self.layout.token_slots] - 1
            out[TOKENS] = self.backbone.token_logits(gather(last, before))  # (B, slots, vocab)
        if self.align is not None:
            middle = hidden[self.backbone.num_layers // 2]
            pooled = gather(middle, positions[:, : self.layout.align_slots]).mean(1)  # (B, D)
            out[ALIGN] = self.align(pooled)
        return out

    def token_targets(self, codes: torch.Tensor) -> torch.Tensor:
        """Latent codes (B, slots) with IGNORE past the episode end -> vocabulary token ids (IGNORE kept)."""
        ignored = codes == IGNORE
        return torch.where(ignored, torch.full_like(codes, IGNORE), self.latent_ids[codes.clamp(min=0)])


def objective(cfg: Any) -> Callable[[nn.Module, Mapping[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]:
    """The training loss of a strategy's cfg: weighted L1 on actions + token CE and/or alignment where configured."""

    def loss_fn(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        terms = compute_losses(_unwrap(model), model(batch), batch)
        loss = cfg.action_weight * terms["l1"]
        if "token_ce" in terms:
            loss = loss + cfg.token_weight * terms["token_ce"]
        if "align" in terms:
            loss = loss + cfg.align_weight * terms["align"]
        return loss, {k: float(v.detach()) for k, v in terms.items()}

    return loss_fn


def compute_losses(model: VLA, out: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
                   ) -> dict[str, torch.Tensor]:
    """Unweighted loss terms: masked L1 on normalized actions, token CE and accuracy, 1 - cosine alignment."""
    valid = batch[ACTION_MASK].unsqueeze(-1).float()  # (B, K, 1)
    error = (out[ACTIONS].float() - batch[ACTIONS]).abs() * valid
    terms = {"l1": error.sum() / (valid.sum() * error.shape[-1]).clamp(min=1)}
    if TOKENS in out:
        targets = model.token_targets(batch[TOKENS])
        logits = out[TOKENS].float().flatten(0, 1)
        terms["token_ce"] = F.cross_entropy(logits, targets.flatten(), ignore_index=IGNORE)
        keep = targets.flatten() != IGNORE
        terms["token_acc"] = (logits.argmax(-1)[keep] == targets.flatten()[keep]).float().mean()
    if ALIGN in out:
        terms["align"] = 1 - F.cosine_similarity(out[ALIGN].float(), batch[ALIGN], dim=-1).mean()
    return terms


def _unwrap(model: nn.Module) -> VLA:
    """The VLA inside an accelerate/DDP wrapper."""
    return model.module if hasattr(model, "module") and not isinstance(model, VLA) else model
