"""The action tokenizer: a chunk of K normalized actions -> K / steps_per_token discrete tokens -> the chunk.

    features  actions (K, A) and their FFT over time (real, imaginary), per step         (B, K, 3A)
    encoder   Linear -> dim, three non-causal dilated Conv1d (dilation 1, 2, 4; residual), transformer
    tokens    each group of steps_per_token steps -> Linear -> code_dim -> quantizer
              vq:  EMA codebook (vector-quantize-pytorch), continuous dead-code restarts, commitment loss;
                   with residual_levels L > 1, L codebooks refine each latent (VQ-BeT's residual VQ): L tokens each
              fsq: finite scalar quantization (QueST-like; no codebook to collapse), levels set the vocabulary
    decoder   token_mlp: each token alone -> its steps' actions (the study's per-token MLP)
              transformer: the chunk's tokens together -> their steps' actions

The study's default is one token per step, 256 EMA codes, the per-token MLP decoder and a masked-latent loss:
15% of the steps are masked at the input and the encoder must still produce their (unmasked) latents.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
from torch import nn
from vector_quantize_pytorch import FSQ, ResidualVQ, VectorQuantize

from common.config import Problem


@dataclasses.dataclass(frozen=True)
class TokenizerParams:
    """Sizes of the action tokenizer; `model` subsection of the `action_vq` params."""

    quantizer: Literal["vq", "fsq"]
    steps_per_token: int  # 1: one token per action step (the study); >1: temporal compression (QueST)
    dim: int
    heads: int
    layers: int  # transformer layers of the encoder (and of the transformer decoder)
    decoder: Literal["token_mlp", "transformer"]
    code_dim: int
    codebook_size: int  # vq only
    residual_levels: int  # vq only: 1 = one code per latent (the study); L > 1 = L residual codes per latent
    fsq_levels: list[int]  # fsq only: the vocabulary is their product
    ema_decay: float  # vq only
    commitment_weight: float  # vq only
    dead_code_threshold: float  # vq only: codes used by fewer samples (EMA) are re-seeded from the batch
    mask_ratio: float  # share of steps masked for the masked-latent loss (0 turns it off)
    mask_weight: float

    @property
    def vocab_size(self) -> int:
        """Number of distinct token ids."""
        return self.codebook_size if self.quantizer == "vq" else math.prod(self.fsq_levels)

    def problems(self) -> list[Problem]:
        """Range and consistency checks."""
        out = []
        for name in ("steps_per_token", "dim", "heads", "layers", "code_dim", "codebook_size", "residual_levels"):
            if getattr(self, name) < 1:
                out.append(Problem(name, getattr(self, name), "must be at least 1", "use a positive integer"))
        if self.heads >= 1 and self.dim % self.heads:
            out.append(Problem("dim", self.dim, f"is not divisible by heads={self.heads}", "make dim a multiple"))
        if not self.fsq_levels or any(level < 3 for level in self.fsq_levels):
            out.append(Problem("fsq_levels", self.fsq_levels, "needs at least one level, each >= 3",
                               "e.g. [8, 5, 5, 5]"))
        if self.quantizer == "fsq" and self.residual_levels != 1:
            out.append(Problem("residual_levels", self.residual_levels, "applies to quantizer vq only",
                               "set 1 with fsq"))
        if not 0 < self.ema_decay < 1:
            out.append(Problem("ema_decay", self.ema_decay, "must be in (0, 1)", "e.g. 0.99"))
        if not 0 <= self.mask_ratio < 1:
            out.append(Problem("mask_ratio", self.mask_ratio, "must be in [0, 1)", "e.g. 0.15"))
        if self.commitment_weight < 0 or self.mask_weight < 0 or self.dead_code_threshold < 0:
            out.append(Problem("commitment_weight/mask_weight/dead_code_threshold",
                               (self.commitment_weight, self.mask_weight, self.dead_code_threshold),
                               "must not be negative", "use 0 or more"))
        return out


@dataclasses.dataclass
class TokenizerOutput:
    """Everything one forward pass computes."""

    reconstruction: torch.Tensor  # (B, K, A) normalized actions
    tokens: torch.Tensor  # (B, K / steps_per_token * residual_levels) int64 ids, levels of a position adjacent
    vectors: torch.Tensor  # (B, K / steps_per_token, code_dim) quantized code vectors
    latent: torch.Tensor  # (B, K / steps_per_token, code_dim) before quantization
    vq_loss: torch.Tensor  # commitment loss (0 for fsq)


def _block(dim: int, heads: int) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        dim, heads, dim_feedforward=4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )


def chunk_features(chunk: torch.Tensor) -> torch.Tensor:
    """Actions and the orthonormal FFT of the chunk over time, per step: (B, K, A) -> (B, K, 3A)."""
    spectrum = torch.fft.fft(chunk.float(), dim=1, norm="ortho")  # (B, K, A) complex
    return torch.cat([chunk, spectrum.real, spectrum.imag], dim=-1)


class ActionTokenizer(nn.Module):
    """Encodes a normalized action chunk into discrete tokens and decodes the chunk back from them."""

    def __init__(self, params: TokenizerParams, chunk: int, action_dim: int):
        super().__init__()
        if chunk % params.steps_per_token:
            raise ValueError(f"chunk {chunk} is not a multiple of steps_per_token {params.steps_per_token}")
        self.params, self.chunk, self.action_dim = params, chunk, action_dim
        self.positions = chunk // params.steps_per_token  # latents per chunk
        self.tokens_per_chunk = self.positions * params.residual_levels
        d, s = params.dim, params.steps_per_token
        self.embed = nn.Linear(3 * action_dim, d)
        self.mask_embedding = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.randn(1, chunk, d) * 0.02)  # ties the weights to K
        self.convs = nn.ModuleList(nn.Conv1d(d, d, 3, padding=dilation, dilation=dilation) for dilation in (1, 2, 4))
        self.encoder = nn.ModuleList(_block(d, params.heads) for _ in range(params.layers))
        self.to_code = nn.Sequential(nn.LayerNorm(s * d), nn.Linear(s * d, params.code_dim))
        if params.quantizer == "vq":
            options = dict(
                codebook_size=params.codebook_size,
                decay=params.ema_decay,
                commitment_weight=params.commitment_weight,
                kmeans_init=True,  # start the codebook from the first batch's latents, not from noise
                threshold_ema_dead_code=params.dead_code_threshold,
            )
            self.quantizer: nn.Module = (
                VectorQuantize(dim=params.code_dim, **options) if params.residual_levels == 1
                else ResidualVQ(dim=params.code_dim, num_quantizers=params.residual_levels, **options)
            )
        else:
            self.quantizer = FSQ(levels=list(params.fsq_levels), dim=params.code_dim)
        if params.decoder == "token_mlp":
            self.decoder: nn.Module = nn.Sequential(
                nn.Linear(params.code_dim, 4 * d), nn.GELU(), nn.Linear(4 * d, 4 * d), nn.GELU(),
                nn.Linear(4 * d, s * action_dim),
            )
        else:
            self.decoder = TransformerDecoder(params, self.positions, s * action_dim)

    def latents(self, chunk: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pre-quantization latents (B, K/s, code_dim) of normalized chunks (B, K, A); `mask` (B, K) hides steps."""
        x = self.embed(chunk_features(chunk))  # (B, K, D)
        if mask is not None:
            x = torch.where(mask[..., None], self.mask_embedding.expand_as(x), x)
        x = (x + self.pos).transpose(1, 2)  # (B, D, K)
        for conv in self.convs:
            x = x + nn.functional.gelu(conv(x))
        x = x.transpose(1, 2)  # (B, K, D)
        for block in self.encoder:
            x = block(x)
        grouped = x.reshape(x.shape[0], self.positions, -1)  # (B, K/s, s*D)
        return self.to_code(grouped)

    def quantize(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Latents -> (code vectors, token ids, commitment loss)."""
        if self.params.quantizer == "vq" and self.params.residual_levels == 1:
            vectors, tokens, loss = self.quantizer(latent)
            return vectors, tokens, loss
        if self.params.quantizer == "vq":
            vectors, tokens, losses = self.quantizer(latent)  # tokens (B, K/s, L)
            return vectors, tokens.flatten(1), losses.sum()
        vectors, tokens = self.quantizer(latent)
        return vectors, tokens, latent.new_zeros(())

    def decode(self, vectors: torch.Tensor) -> torch.Tensor:
        """Code vectors (B, K/s, code_dim) -> normalized actions (B, K, A)."""
        out = self.decoder(vectors)  # (B, K/s, s*A)
        return out.reshape(out.shape[0], self.chunk, self.action_dim)

    def tokens_to_vectors(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B, tokens_per_chunk) -> their code vectors (B, K/s, code_dim)."""
        if self.params.quantizer == "vq" and self.params.residual_levels > 1:
            return self.quantizer.get_output_from_indices(tokens.reshape(tokens.shape[0], self.positions, -1))
        if self.params.quantizer == "vq":
            return self.quantizer.get_output_from_indices(tokens)
        return self.quantizer.indices_to_codes(tokens)

    def forward(self, chunk: torch.Tensor) -> TokenizerOutput:
        """Normalized chunks (B, K, A) -> tokens and reconstruction."""
        latent = self.latents(chunk)
        vectors, tokens, vq_loss = self.quantize(latent)
        return TokenizerOutput(self.decode(vectors), tokens, vectors, latent, vq_loss)


class TransformerDecoder(nn.Module):
    """Decodes all tokens of a chunk together (the alternative to the per-token MLP)."""

    def __init__(self, params: TokenizerParams, tokens: int, out_dim: int):
        super().__init__()
        self.inp = nn.Linear(params.code_dim, params.dim)
        self.pos = nn.Parameter(torch.randn(1, tokens, params.dim) * 0.02)
        self.blocks = nn.ModuleList(_block(params.dim, params.heads) for _ in range(params.layers))
        self.out = nn.Sequential(nn.LayerNorm(params.dim), nn.Linear(params.dim, out_dim))

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        x = self.inp(vectors) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.out(x)
