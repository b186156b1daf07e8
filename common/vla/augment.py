"""Image augmentation in torch, batched: random crop (resized back) and colour jitter; a matching eval view.

Training crops a random square of side `crop_scale` x the image and resizes it back; evaluation takes the centre
crop of the same size, so a policy sees the same scale in both.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from common.config import Problem


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """Training-time image augmentation (0 / 1.0 turn a part off)."""

    crop_scale: float  # side of the random crop as a fraction of the image (1.0: no crop)
    brightness: float  # factor drawn from [1 - b, 1 + b]
    contrast: float
    saturation: float

    def problems(self) -> list[Problem]:
        """Range checks."""
        out = []
        if not 0.5 <= self.crop_scale <= 1.0:
            out.append(Problem("crop_scale", self.crop_scale, "must be in [0.5, 1]", "e.g. 0.9 (1.0: no crop)"))
        for name in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, name) < 1:
                out.append(Problem(name, getattr(self, name), "must be in [0, 1)", "e.g. 0.2 (0: off)"))
        return out


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, cams, H, W, 3) -> float (B, cams, 3, H, W) in [0, 1]."""
    return images.permute(0, 1, 4, 2, 3).float() / 255.0


def _crop(x: torch.Tensor, scale: float, offsets: torch.Tensor) -> torch.Tensor:
    """Crop (N, 3, H, W) to `scale` of its side at offsets (N, 2) in [-1, 1] of the free range; resize back."""
    n = x.shape[0]
    theta = torch.zeros(n, 2, 3, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = offsets.to(x.dtype) * (1 - scale)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def augment(images: torch.Tensor, params: AugmentParams, generator: torch.Generator) -> torch.Tensor:
    """uint8 (B, cams, H, W, 3) -> augmented float (B, cams, 3, H, W) in [0, 1], drawn from `generator`."""
    x = to_float(images)
    batch, cams = x.shape[:2]
    x = x.flatten(0, 1)  # (N, 3, H, W)
    n = x.shape[0]
    draw = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    if params.crop_scale < 1.0:
        x = _crop(x, params.crop_scale, draw(n, 2) * 2 - 1)
    if params.brightness > 0:
        x = x * (1 + (draw(n, 1, 1, 1) * 2 - 1) * params.brightness)
    if params.contrast > 0:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (1 + (draw(n, 1, 1, 1) * 2 - 1) * params.contrast) + mean
    if params.saturation > 0:
        gray = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        x = (x - gray) * (1 + (draw(n, 1, 1, 1) * 2 - 1) * params.saturation) + gray
    return x.clamp(0, 1).view(batch, cams, *x.shape[1:])


def eval_view(images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """uint8 (B, cams, H, W, 3) -> float (B, cams, 3, H, W): the centre crop at the training crop scale."""
    x = to_float(images)
    if params.crop_scale >= 1.0:
        return x
    batch, cams = x.shape[:2]
    flat = x.flatten(0, 1)
    return _crop(flat, params.crop_scale, torch.zeros(flat.shape[0], 2)).view(batch, cams, *flat.shape[1:])
