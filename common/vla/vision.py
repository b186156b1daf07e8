"""Where a small VLA's compute goes in Qwen3-VL's vision tower: one attention call for all images, a conv stem.

Without flash attention, transformers' Qwen3-VL vision attention splits the packed patch sequence per image and
makes one SDPA call per image (64 images x 2 blocks, forward and backward, per tiny training step). Every image a
VLA sees has one size, so the images stack into one batch and one call: `BatchedVisionAttention` does that and
falls back to the stock path for images of different sizes or flash attention. Same weights, same module names
(a pretrained checkpoint loads unchanged), same outputs to float rounding.

`StemPatchEmbed` replaces the linear patch embedding of the tiny preset by strided 3x3 convolutions with
GroupNorm (Octo's SmallStem) and a linear projection: the conv features a behaviour-cloning policy learns in
minutes here, feeding the same transformer, merger and token layout.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from common.convstem import ConvStem


@functools.cache
def batched_attention_class() -> type:
    """A subclass of Qwen3-VL's vision attention whose forward attends over all equal-size images at once."""
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionAttention, apply_rotary_pos_emb_vision

    class BatchedVisionAttention(Qwen3VLVisionAttention):
        def forward(self, hidden_states: torch.Tensor, cu_seqlens: torch.Tensor,
                    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
                    max_seqlen: int | None = None, **kwargs: Any) -> torch.Tensor:
            lengths = cu_seqlens[1:] - cu_seqlens[:-1]
            if "flash" in str(self.config._attn_implementation) or bool((lengths != lengths[0]).any()):
                return super().forward(hidden_states, cu_seqlens, position_embeddings, max_seqlen, **kwargs)
            seq, images = hidden_states.shape[0], lengths.numel()
            q, k, v = self.qkv(hidden_states).reshape(seq, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
            cos, sin = position_embeddings
            q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)  # (seq, heads, d)
            q, k, v = (t.view(images, seq // images, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scaling)  # (images, heads, L, d)
            return self.proj(out.transpose(1, 2).reshape(seq, -1))

    return BatchedVisionAttention


class StemPatchEmbed(nn.Module):
    """Patches in Qwen3-VL's processor order -> images -> conv stem -> one embedding per patch, same order."""

    def __init__(self, widths: tuple[int, ...], patch: int, temporal: int, channels: int, hidden: int, grid: int,
                 merge: int):
        super().__init__()
        self.patch, self.temporal, self.channels, self.grid, self.merge = patch, temporal, channels, grid, merge
        self.stem = ConvStem(channels, widths)
        if self.stem.reduction != patch:
            raise ValueError(f"a stem of {len(widths)} stride-2 convs reduces by {self.stem.reduction}, "
                             f"not by the patch size {patch}")
        self.proj = nn.Linear(widths[-1], hidden)

    def to_images(self, patches: torch.Tensor) -> torch.Tensor:
        """(N * grid * grid, C * temporal * p * p) in processor order -> (N, C, H, W) images."""
        g, m, p, c = self.grid, self.merge, self.patch, self.channels
        n = patches.shape[0] // (g * g)
        # Processor order (N, g/m, g/m, m, m, C, t, p, p); every temporal slice of a still image is the same frame.
        x = patches.view(n, g // m, g // m, m, m, c, self.temporal, p, p)[:, :, :, :, :, :, 0]
        return x.permute(0, 5, 1, 3, 6, 2, 4, 7).reshape(n, c, g * p, g * p)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(N * grid * grid, C * temporal * p * p) -> (N * grid * grid, hidden), one embedding per patch."""
        g, m = self.grid, self.merge
        images = self.to_images(patches).to(self.proj.weight.dtype)
        # channels-last: oneDNN's small-channel convolutions run ~1.6x faster forward + backward on a CPU
        features = self.stem(images.contiguous(memory_format=torch.channels_last))  # (N, W, g, g)
        n = features.shape[0]
        features = features.view(n, -1, g // m, m, g // m, m).permute(0, 2, 4, 3, 5, 1)  # (N, g/m, g/m, m, m, W)
        return self.proj(features.reshape(n * g * g, -1))


def adapt_qwen3_vl_vision(vlm: nn.Module, stem: tuple[int, ...]) -> None:
    """Batched vision attention in every block; the conv stem in place of the patch embedding if `stem` is given."""
    visual = vlm.model.visual
    attention = batched_attention_class()
    for block in visual.blocks:
        block.attn.__class__ = attention  # same parameters and names: only the forward changes
    if stem:
        config = visual.config
        grid = int(config.num_position_embeddings ** 0.5)  # the tiny preset sizes the position grid to the image
        visual.patch_embed = StemPatchEmbed(stem, config.patch_size, config.temporal_patch_size, config.in_channels,
                                            config.hidden_size, grid, config.spatial_merge_size)
