"""What a supervision strategy is: one object that owns its params, prompt layout, latent, vocabulary, targets,
losses and extra modules. The shared model (common/vla/model.py), data (common/vla/data.py) and build code call
these methods and never ask which strategy they hold.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from common.config import Problem

LatentKind = Literal["none", "lam", "action_vq"]
PLACEHOLDER = "<|act_query|>"
LAM_TOKEN, ACTION_TOKEN = "<ACT_{}>", "<LA_{}>"
# (B, n) positions, hidden states of one layer (B, S, D) -> the states at those positions (B, n, D)
Gather = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def non_negative(obj: Any) -> list[Problem]:
    """A Problem for each negative field of a params dataclass."""
    return [Problem(f.name, getattr(obj, f.name), "must not be negative", "use 0 or more")
            for f in dataclasses.fields(obj) if getattr(obj, f.name) < 0]


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where things sit among a prompt's placeholders (recorded in meta.json)."""

    placeholders: int  # placeholder tokens after the instruction
    token_slots: int  # the leading placeholders a token loss supervises (0: none)
    align_slots: int  # the leading placeholders pooled for alignment (0: none)
    head_from: int  # the head reads placeholders[head_from:]
    pool: int  # average each group of `pool` head placeholders (1: none)


class Strategy:
    """One supervision strategy. Subclass, set the class attributes, override what differs, and `@register` it.

    The defaults are the baseline's: no latent, no added tokens, the action head reads every placeholder, the loss
    is the weighted action L1 alone.
    """

    name: ClassVar[str]  # the registry key, `strategy_cfg.<name>` and the matrix item's strategy
    latent: ClassVar[LatentKind]  # which extract sidecar it reads besides the demos
    cfg: ClassVar[type]  # the frozen dataclass of `strategy_cfg.<name>` (has at least `action_weight`)

    def layout(self, chunk: int, latent_meta: dict[str, Any], per_step: int) -> Layout:
        """The prompt's placeholders for a chunk length, the sidecar's meta and finetune.placeholders_per_step."""
        raise NotImplementedError

    def vocabulary(self, latent_meta: dict[str, Any]) -> tuple[str, ...]:
        """The latent tokens this strategy adds to the tokenizer, in id order (code i -> entry i)."""
        return ()

    def module_width(self, cfg: Any) -> int:
        """The width its extra modules take from its params (recorded as the spec's `align_hidden`; 0: none)."""
        return 0

    def modules(self, hidden_size: int, width: int, latent_meta: dict[str, Any]) -> dict[str, nn.Module]:
        """Extra trained modules, by attribute name, created after the action head (their init draws follow it)."""
        return {}

    def targets(self, arrays: dict[str, np.ndarray], t: int, chunk: int, layout: Layout) -> dict[str, np.ndarray]:
        """The batch entries of sample t from one episode's sidecar arrays ({} without a latent)."""
        return {}

    def head_inputs(self, placeholders: torch.Tensor, layout: Layout) -> torch.Tensor:
        """(B, n, D) placeholder states -> what the action head reads (B, m, D)."""
        picked = placeholders[:, layout.head_from :]
        if layout.pool > 1:
            batch, count, dim = picked.shape
            picked = picked.view(batch, count // layout.pool, layout.pool, dim).mean(2)
        return picked

    def outputs(self, model: Any, hidden: tuple[torch.Tensor, ...], last: torch.Tensor, positions: torch.Tensor,
                gather: Gather) -> dict[str, torch.Tensor]:
        """Predictions besides the actions (token logits, aligned vectors) from the backbone's states."""
        return {}

    def loss_terms(self, model: Any, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
                   ) -> dict[str, torch.Tensor]:
        """Unweighted loss terms and scores besides the action L1 (logged, and averaged in evaluation)."""
        return {}

    def loss(self, cfg: Any, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss: the weighted sum of the terms this strategy trains on."""
        return cfg.action_weight * terms["l1"]
