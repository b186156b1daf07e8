"""What the latent action model reads and predicts: raw pixel patches, or frozen DINOv2 patch features.

Pixels are the offline default (LAPA, Genie, LAPO); DINOv2 features (UniVLA) leak less appearance into the
latent. Both map uint8 frames (B, H, W, 3) to tokens (B, N, F).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FeatureError(ValueError):
    """Images and feature extractor do not fit together; the message says how to fix it."""


class FeatureExtractor(nn.Module):
    """Maps uint8 frames (B, H, W, 3) to tokens (B, N, F); never trained by the LAM."""

    num_tokens: int
    feature_dim: int


class PixelPatches(FeatureExtractor):
    """Non-overlapping p x p patches of the frame, flattened, in [0, 1]."""

    def __init__(self, image_size: int, patch_size: int):
        super().__init__()
        check_patch_fit(image_size, patch_size, "lam.model.patch_size")
        self.patch_size = patch_size
        self.num_tokens = (image_size // patch_size) ** 2
        self.feature_dim = 3 * patch_size * patch_size

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W)
        patches = nn.functional.unfold(x, self.patch_size, stride=self.patch_size)  # (B, 3*p*p, N)
        return patches.transpose(1, 2)  # (B, N, 3*p*p)


class Dinov2Patches(FeatureExtractor):
    """Frozen DINOv2 patch features (CLS and register tokens dropped)."""

    def __init__(self, source: str, image_size: int):
        super().__init__()
        from transformers import Dinov2Model

        try:
            self.model = Dinov2Model.from_pretrained(source)
        except OSError as exc:
            raise FeatureError(
                f"cannot load DINOv2 from {source!r} ({exc}). Next step: set lam.model.dinov2 to a local folder "
                "holding a Dinov2Model (config.json + weights), or use lam.model.input: pixels offline"
            ) from exc
        self.model.requires_grad_(False).eval()
        config: Any = self.model.config
        check_patch_fit(image_size, config.patch_size, f"the DINOv2 patch size of {source!r}")
        self.skip = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        self.num_tokens = (image_size // config.patch_size) ** 2
        self.feature_dim = config.hidden_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "Dinov2Patches":
        super().train(mode)
        self.model.eval()  # frozen: always in eval mode
        return self

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = (frames.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        hidden = self.model(pixel_values=x).last_hidden_state  # (B, 1+R+N, F)
        return hidden[:, self.skip :]


def check_patch_fit(image_size: int, patch_size: int, what: str) -> None:
    """Images must hold at least one patch and a whole number of them."""
    if image_size < patch_size:
        raise FeatureError(
            f"images are {image_size}px, smaller than one {patch_size}px patch ({what}). "
            "Next step: collect larger images (collect.image_size) or use a smaller patch"
        )
    if image_size % patch_size:
        raise FeatureError(
            f"images of {image_size}px do not split into {patch_size}px patches ({what}). "
            f"Next step: use a patch size that divides {image_size}"
        )


def build_features(params: Any, image_size: int) -> FeatureExtractor:
    """The extractor named by params.input."""
    if params.input == "pixels":
        return PixelPatches(image_size, params.patch_size)
    return Dinov2Patches(params.dinov2, image_size)
