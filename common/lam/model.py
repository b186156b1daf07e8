"""The image-based latent action model (UniVLA/Genie lineage), small enough to train on a CPU.

    frames t, t+gap -> features (pixel patches or frozen DINOv2 patch features)    (B, 2, N, F)
    encoder: spatio-temporal transformer, Q learned query tokens per frame, attention causal in time; frame
             t+gap's tokens also embed its difference from frame t
    latent: what the queries of frame t+gap add to those of frame t -> LayerNorm -> Linear(D, code_dim) -> Q codes:
            `per_query`: each query quantized alone against one shared codebook (UniVLA's layout);
            `residual`: the queries' mean quantized coarse-to-fine by Q residual levels of one codebook each
    decoder: spatial transformer over frame t's tokens + the Q latent tokens -> frame t+gap's features

The decoder sees frame t and the latent only, never frame t+gap: the latent is the one path from the future
frame to the prediction (tests/common/test_lam.py checks that it is used).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn
from vector_quantize_pytorch import ResidualVQ, VectorQuantize

from common.config import Problem
from common.lam.features import FeatureExtractor, build_features


@dataclasses.dataclass(frozen=True)
class LamModelParams:
    """Sizes of the latent action model; `model` subsection of the `lam` params."""

    input: Literal["pixels", "dinov2"]
    dinov2: str  # hub id or local directory of a transformers Dinov2Model, used when input is dinov2
    patch_size: int  # pixels input only; DINOv2 has its own
    dim: int
    heads: int
    encoder_layers: int
    decoder_layers: int
    codes_per_transition: int
    codebook_size: int
    code_dim: int
    # per_query: the Q codes of a transition are Q separate quantizations of similar vectors and carry about as much
    # as one code (measured: MLP-probe R^2 0.70 with 4 codes, 0.71 with the first alone); residual: Q levels that
    # refine one vector, 16^Q distinct latents (same vocabulary, same number of tokens per transition)
    quantizer: Literal["per_query", "residual"]
    code_metric: Literal["euclidean", "cosine"]  # cosine: codes and latents on the unit sphere (resists collapse)
    ema_decay: float
    commitment_weight: float
    dead_code_threshold: float  # codes whose EMA usage falls below this many samples are re-seeded every step

    def problems(self) -> list[Problem]:
        """Range and consistency checks."""
        out = []
        for name in ("patch_size", "dim", "heads", "encoder_layers", "decoder_layers", "codes_per_transition",
                     "codebook_size", "code_dim"):
            if getattr(self, name) < 1:
                out.append(Problem(name, getattr(self, name), "must be at least 1", "use a positive integer"))
        if self.heads >= 1 and self.dim % self.heads:
            out.append(Problem("dim", self.dim, f"is not divisible by heads={self.heads}", "make dim a multiple"))
        if not 0 < self.ema_decay < 1:
            out.append(Problem("ema_decay", self.ema_decay, "must be in (0, 1)", "e.g. 0.99"))
        if self.quantizer == "residual" and self.code_metric == "cosine":
            out.append(Problem("code_metric", self.code_metric, "residual levels quantize what the previous levels "
                               "left over, a length that cosine codes cannot represent", "use euclidean"))
        if self.input == "dinov2" and not self.dinov2:
            out.append(Problem("dinov2", self.dinov2, "is empty but input is dinov2", "name a hub id or a folder"))
        return out


def _block(dim: int, heads: int) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        dim, heads, dim_feedforward=4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )


class SpatioTemporalLayer(nn.Module):
    """Attention within each frame (patches + queries), then across frames at each position, causal in time."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.spatial = _block(dim, heads)
        self.temporal = _block(dim, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, tokens, dim = x.shape  # (B, T, N+Q, D)
        x = self.spatial(x.reshape(batch * frames, tokens, dim)).reshape(batch, frames, tokens, dim)
        x = x.transpose(1, 2).reshape(batch * tokens, frames, dim)  # (B*(N+Q), T, D)
        causal = torch.triu(torch.full((frames, frames), float("-inf"), device=x.device), diagonal=1)
        x = self.temporal(x, src_mask=causal)
        return x.reshape(batch, tokens, frames, dim).transpose(1, 2)  # (B, T, N+Q, D)


@dataclasses.dataclass
class LamOutput:
    """Everything one forward pass computes."""

    prediction: torch.Tensor  # (B, N, F) predicted features of frame t+gap
    target: torch.Tensor  # (B, N, F)
    source: torch.Tensor  # (B, N, F) features of frame t
    codes: torch.Tensor  # (B, Q) code ids
    latent: torch.Tensor  # (B, Q, code_dim) quantized code vectors
    vq_loss: torch.Tensor  # commitment loss (the codebook itself learns by EMA)


class LatentActionModel(nn.Module):
    """Encodes the change between two frames into Q discrete codes and decodes the second frame from them."""

    def __init__(self, params: LamModelParams, image_size: int):
        super().__init__()
        self.params = params
        self.features: FeatureExtractor = build_features(params, image_size)
        n, f = self.features.num_tokens, self.features.feature_dim
        d, q = params.dim, params.codes_per_transition
        self.enc_in = nn.Linear(f, d)
        # LayerNorm: frame differences are small numbers; normalised, they dominate the queries from the start.
        self.enc_delta = nn.Sequential(nn.Linear(f, d), nn.LayerNorm(d))
        self.enc_pos = nn.Parameter(torch.randn(1, 1, n + q, d) * 0.02)
        self.enc_time = nn.Parameter(torch.randn(1, 2, 1, d) * 0.02)
        self.queries = nn.Parameter(torch.randn(1, 1, q, d) * 0.02)
        self.encoder = nn.ModuleList(SpatioTemporalLayer(d, params.heads) for _ in range(params.encoder_layers))
        self.to_code = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, params.code_dim))
        vq_options = dict(
            codebook_size=params.codebook_size,
            decay=params.ema_decay,
            commitment_weight=params.commitment_weight,
            kmeans_init=True,  # start the codebook from the first batch's latents, not from noise
            use_cosine_sim=params.code_metric == "cosine",
            threshold_ema_dead_code=params.dead_code_threshold,
        )
        self.vq: nn.Module = (
            ResidualVQ(dim=params.code_dim, num_quantizers=q, **vq_options) if params.quantizer == "residual"
            else VectorQuantize(dim=params.code_dim, **vq_options)
        )
        self.dec_in = nn.Linear(f, d)
        self.dec_latent = nn.Linear(params.code_dim, d)
        self.dec_pos = nn.Parameter(torch.randn(1, n + q, d) * 0.02)
        self.decoder = nn.ModuleList(_block(d, params.heads) for _ in range(params.decoder_layers))
        self.dec_out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, f))
        nn.init.zeros_(self.dec_out[1].weight)  # start as an exact copy of frame t (see decode): no noise to unlearn
        nn.init.zeros_(self.dec_out[1].bias)

    def encode(self, first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features of both frames -> (quantized latent (B, Q, C), code ids (B, Q), commitment loss)."""
        # Frame t+gap's tokens also carry the change since frame t explicitly: without it the queries start out
        # nearly identical across samples and the codebook collapses before the encoder learns to compare frames.
        x = torch.stack([self.enc_in(first), self.enc_in(second) + self.enc_delta(second - first)], dim=1)
        q = self.queries.expand(x.shape[0], 2, -1, -1)
        x = torch.cat([x, q], dim=2) + self.enc_pos + self.enc_time  # (B, 2, N+Q, D)
        for layer in self.encoder:
            x = layer(x)
        # The latent is what the queries of frame t+gap (which see both frames) add to those of frame t (which,
        # causal in time, see frame t only): the part every sample shares cancels, so the codes start out
        # spread by the change between the frames instead of collapsing onto the shared part.
        queries = self.to_code(x[:, :, -self.params.codes_per_transition :])  # (B, 2, Q, C)
        pre = queries[:, 1] - queries[:, 0]  # (B, Q, C)
        if self.params.quantizer == "per_query":
            latent, codes, vq_loss = self.vq(pre)
            return latent, codes, vq_loss
        mean = pre.mean(dim=1, keepdim=True)  # (B, 1, C)
        _, codes, losses, levels = self.vq(mean, return_all_codes=True)
        # levels: (Q, B, 1, C), one code vector per level; their sum is the quantized mean. Straight-through for
        # every token: each carries its level's value forward and the encoder's gradient back.
        levels = levels[:, :, 0].transpose(0, 1)  # (B, Q, C)
        latent = levels.detach() + (mean - mean.detach())
        return latent, codes[:, 0], losses.sum()

    def decode(self, first: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """Frame t's features and a latent -> predicted features of frame t+gap: (B, N, F).

        The decoder predicts the change from frame t: copying the static scene is free, so the whole loss is
        about what moved, which only the latent can tell.
        """
        x = torch.cat([self.dec_in(first), self.dec_latent(latent)], dim=1) + self.dec_pos
        for block in self.decoder:
            x = block(x)
        return first + self.dec_out(x[:, : first.shape[1]])

    def forward(self, frame_t: torch.Tensor, frame_next: torch.Tensor) -> LamOutput:
        """Frames as uint8 (B, H, W, 3)."""
        first, second = self.features(frame_t), self.features(frame_next)
        latent, codes, vq_loss = self.encode(first, second)
        return LamOutput(self.decode(first, latent), second, first, codes, latent, vq_loss)
