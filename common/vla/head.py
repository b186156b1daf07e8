"""The action head (VLA-Adapter-style bridge attention, L1 regression), the proprio projector, the align projector.

K learned queries pass through one block per VLM layer read (the last `depth` layers). Each block attends, in
one softmax, to (a) the queries themselves, (b) that layer's placeholder hidden states plus the projected
proprio, and (c) that layer's visual and task tokens, whose logits are scaled by tanh(gate) with the gate
starting at 0, so the head first relies on the placeholders and learns how much raw context to read.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from common.config import Problem


@dataclasses.dataclass(frozen=True)
class HeadParams:
    """The bridge-attention action head."""

    depth: int  # blocks = last VLM layers read; 0: half the layers (the study's N/2)
    dim: int
    heads: int
    query_noise: float  # std of Gaussian noise on the queries in training (the study: 0.02)

    def problems(self) -> list[Problem]:
        """Range checks."""
        out = []
        if self.depth < 0:
            out.append(Problem("depth", self.depth, "must not be negative", "0 (half the VLM layers) or e.g. 2"))
        if self.dim < 1 or self.heads < 1 or self.dim % self.heads:
            out.append(Problem("dim", self.dim, f"must be a positive multiple of heads ({self.heads})", "e.g. 128"))
        if self.query_noise < 0:
            out.append(Problem("query_noise", self.query_noise, "must not be negative", "e.g. 0.02"))
        return out

    def blocks(self, num_layers: int) -> int:
        """How many VLM layers (and head blocks) are read."""
        return self.depth or max(num_layers // 2, 1)


class ProprioProjector(nn.Module):
    """Linear(P, H) -> GELU -> Linear(H, H): the robot state as one token."""

    def __init__(self, proprio_dim: int, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(proprio_dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        """(B, P) -> (B, 1, H)."""
        return self.net(proprio).unsqueeze(1)


class AlignProjector(nn.Module):
    """LN -> Linear(H, hidden) -> GELU -> Linear(hidden, out): a hidden state into the LAM's code space."""

    def __init__(self, dim: int, hidden: int, out: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (..., out)."""
        return self.net(hidden)


class BridgeBlock(nn.Module):
    """One block: queries attend to themselves, placeholders + proprio, and gated context in one softmax."""

    def __init__(self, vlm_dim: int, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.norm_q = nn.LayerNorm(dim)
        self.ph_in = nn.Sequential(nn.LayerNorm(vlm_dim), nn.Linear(vlm_dim, dim))
        self.ctx_in = nn.Sequential(nn.LayerNorm(vlm_dim), nn.Linear(vlm_dim, dim))
        self.q = nn.Linear(dim, dim)
        self.kv_self, self.kv_ph, self.kv_ctx = (nn.Linear(dim, 2 * dim) for _ in range(3))
        self.gate = nn.Parameter(torch.zeros(1))
        self.out = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.head_dim).transpose(1, 2)  # (B, h, L, d)

    def forward(self, queries: torch.Tensor, placeholders: torch.Tensor, proprio: torch.Tensor,
                context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """queries (B, K, dim); placeholders (B, n, D); proprio (B, 1, dim); context (B, S, D), mask (B, S)."""
        x = self.norm_q(queries)
        q = self._split(self.q(x))
        keys, values = [], []
        for proj, source in ((self.kv_self, x), (self.kv_ph, torch.cat([self.ph_in(placeholders), proprio], 1)),
                             (self.kv_ctx, self.ctx_in(context))):
            k, v = proj(source).chunk(2, dim=-1)
            keys.append(self._split(k))
            values.append(self._split(v))
        scale = 1.0 / math.sqrt(self.head_dim)
        own = q @ torch.cat(keys[:2], 2).transpose(-1, -2) * scale  # (B, h, K, K + n + 1)
        ctx = q @ keys[2].transpose(-1, -2) * scale * torch.tanh(self.gate)  # (B, h, K, S)
        ctx = ctx.masked_fill(~context_mask[:, None, None, :], float("-inf"))
        weights = torch.softmax(torch.cat([own, ctx], -1), dim=-1)
        attended = weights @ torch.cat(values, 2)  # (B, h, K, d)
        queries = queries + self.out(attended.transpose(1, 2).flatten(2))
        return queries + self.mlp(queries)


class BridgeActionHead(nn.Module):
    """K queries through `blocks` bridge blocks (one per VLM layer read) -> LayerNorm -> Linear -> actions."""

    def __init__(self, vlm_dim: int, params: HeadParams, blocks: int, chunk: int, action_dim: int, proprio_dim: int):
        super().__init__()
        self.query_noise = params.query_noise
        self.queries = nn.Parameter(torch.randn(chunk, params.dim) * 0.02)
        self.proprio = ProprioProjector(proprio_dim, params.dim)
        self.blocks = nn.ModuleList(BridgeBlock(vlm_dim, params.dim, params.heads) for _ in range(blocks))
        self.norm = nn.LayerNorm(params.dim)
        self.to_action = nn.Linear(params.dim, action_dim)

    def forward(self, placeholders: list[torch.Tensor], contexts: list[torch.Tensor], context_mask: torch.Tensor,
                proprio: torch.Tensor) -> torch.Tensor:
        """Per read layer: placeholders (B, n, D), context (B, S, D); mask (B, S); proprio (B, P) -> (B, K, A)."""
        batch = proprio.shape[0]
        queries = self.queries.unsqueeze(0).expand(batch, -1, -1)
        if self.training and self.query_noise > 0:
            queries = queries + torch.randn_like(queries) * self.query_noise
        state = self.proprio(proprio)
        for block, ph, ctx in zip(self.blocks, placeholders, contexts, strict=True):
            queries = block(queries, ph, state, ctx, context_mask)
        return self.to_action(self.norm(queries))
