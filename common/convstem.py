"""A small convolutional stem: strided 3x3 convolutions with GroupNorm and ReLU (Octo's SmallStem, scaled down).

Each layer halves the image side. Shared by the VLA's vision tower (in front of its patch embedding) and the
reference behaviour-cloning policy, so that both see images through the same kind of features.
"""

from __future__ import annotations

import torch
from torch import nn


def group_count(channels: int, preferred: int = 8) -> int:
    """The largest divisor of `channels` that is at most `preferred` (GroupNorm needs one)."""
    return max(g for g in range(1, min(preferred, channels) + 1) if channels % g == 0)


class ConvStem(nn.Module):
    """(N, C, H, W) -> (N, widths[-1], H / 2**len(widths), W / 2**len(widths))."""

    def __init__(self, in_channels: int, widths: tuple[int, ...]):
        super().__init__()
        if not widths:
            raise ValueError("ConvStem needs at least one width")
        layers: list[nn.Module] = []
        for width in widths:
            layers += [nn.Conv2d(in_channels, width, 3, stride=2, padding=1),
                       nn.GroupNorm(group_count(width), width), nn.ReLU()]
            in_channels = width
        self.net = nn.Sequential(*layers)
        self.reduction = 2 ** len(widths)
        self.out_channels = widths[-1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Feature maps of a batch of images."""
        return self.net(images)
