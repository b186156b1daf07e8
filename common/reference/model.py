"""The reference policy network: per camera a strided conv stem, plus a task embedding and proprio -> K actions.

Images enter as uint8 (B, cams, H, W, 3) exactly as collect stores them and the harness renders them, so training,
held-out scoring and closed-loop acting share one preprocessing path (inside `forward`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from common.config import Problem
from common.convstem import ConvStem

IMAGES, PROPRIO, TASK = "images", "proprio", "task"  # batch keys: uint8 images, normalized proprio, task index
ACTIONS, ACTION_MASK = "actions", "action_mask"  # (B, K, A) normalized targets, (B, K) False past an episode's end


@dataclasses.dataclass(frozen=True)
class ModelParams:
    """The `reference.model` subsection: layer sizes."""

    widths: tuple[int, ...]  # conv channels per stride-2 layer (each halves the image side)
    feature_dim: int  # per camera: the flattened feature map projected to this size
    task_dim: int  # learned task embedding
    proprio_hidden: int  # proprio through one linear layer of this width
    hidden: int  # width of the MLP trunk
    layers: int  # hidden layers of the trunk

    def problems(self) -> list[Problem]:
        """Range checks."""
        out = []
        if not self.widths or min(self.widths) < 1:
            out.append(Problem("widths", list(self.widths), "must list at least one positive width",
                               "e.g. [32, 64, 128, 128]"))
        for name in ("feature_dim", "task_dim", "proprio_hidden", "hidden", "layers"):
            if getattr(self, name) < 1:
                out.append(Problem(name, getattr(self, name), "must be at least 1", "use a positive integer"))
        return out


@dataclasses.dataclass(frozen=True)
class ReferenceSpec:
    """Everything that defines the network's shape (stored in meta.json as "spec")."""

    chunk: int
    action_dim: int
    proprio_dim: int
    cameras: tuple[str, ...]
    image_size: int
    tasks: tuple[str, ...]  # task index i embeds tasks[i]
    model: ModelParams

    def to_json(self) -> dict[str, Any]:
        """Plain data for meta.json."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "ReferenceSpec":
        """Inverse of `to_json`."""
        model = ModelParams(**{**raw["model"], "widths": tuple(raw["model"]["widths"])})
        return cls(int(raw["chunk"]), int(raw["action_dim"]), int(raw["proprio_dim"]), tuple(raw["cameras"]),
                   int(raw["image_size"]), tuple(raw["tasks"]), model)


def feature_side(image_size: int, layers: int) -> int:
    """Side of the stem's output map: each 3x3 stride-2 conv with padding 1 maps a side s to ceil(s / 2)."""
    side = image_size
    for _ in range(layers):
        side = math.ceil(side / 2)
    return side


class ReferenceNet(nn.Module):
    """(images, proprio, task) -> (B, K, A) normalized actions."""

    def __init__(self, spec: ReferenceSpec):
        super().__init__()
        m = spec.model
        self.spec = spec
        flat = m.widths[-1] * feature_side(spec.image_size, len(m.widths)) ** 2
        # One stem per camera: the fixed view and the wrist view see very different images.
        self.stems = nn.ModuleList(ConvStem(3, m.widths) for _ in spec.cameras)
        # Flatten rather than pool: where the object is in the fixed view is what the action depends on.
        self.projections = nn.ModuleList(
            nn.Sequential(nn.Flatten(), nn.Linear(flat, m.feature_dim), nn.LayerNorm(m.feature_dim), nn.ReLU())
            for _ in spec.cameras)
        self.task_embedding = nn.Embedding(len(spec.tasks), m.task_dim)
        self.proprio = nn.Sequential(nn.Linear(spec.proprio_dim, m.proprio_hidden), nn.ReLU())
        width = len(spec.cameras) * m.feature_dim + m.task_dim + m.proprio_hidden
        trunk: list[nn.Module] = []
        for _ in range(m.layers):
            trunk += [nn.Linear(width, m.hidden), nn.ReLU()]
            width = m.hidden
        self.trunk = nn.Sequential(*trunk, nn.Linear(width, spec.chunk * spec.action_dim))

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Normalized action chunks (B, K, A); images are uint8 (B, cams, H, W, 3)."""
        images = batch[IMAGES].permute(0, 1, 4, 2, 3).float() / 255.0 - 0.5  # (B, cams, 3, H, W)
        features = [project(stem(images[:, i])) for i, (stem, project) in
                    enumerate(zip(self.stems, self.projections))]  # cams x (B, feature_dim)
        features += [self.task_embedding(batch[TASK]), self.proprio(batch[PROPRIO])]
        out = self.trunk(torch.cat(features, dim=1))  # (B, K * A)
        return out.view(-1, self.spec.chunk, self.spec.action_dim)


def make_reference(spec: ReferenceSpec, seed: int) -> ReferenceNet:
    """A freshly initialised network (the same weights for the same spec and seed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ReferenceNet(spec)


def masked_l1(predicted: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean L1 over the chunk steps inside the episode (steps past its end carry no target)."""
    mask = batch[ACTION_MASK].unsqueeze(-1).to(predicted.dtype)  # (B, K, 1)
    return ((predicted - batch[ACTIONS]).abs() * mask).sum() / (mask.sum() * predicted.shape[-1]).clamp(min=1)


def l1_objective(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """common.train's loss function: L1 on normalized actions."""
    loss = masked_l1(model(batch), batch)
    return loss, {"l1": float(loss.detach())}


def random_shift(images: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """DrQ's augmentation: pad each image by `pad` edge pixels, crop back to its size at a random offset.

    (B, cams, H, W, 3) uint8 -> the same shape; every camera image of every sample draws its own offset.
    """
    if pad == 0:
        return images
    batch, cams, height, width, _ = images.shape
    padded = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    offsets = rng.integers(0, 2 * pad + 1, (batch, cams, 2))
    out = np.empty_like(images)
    for b in range(batch):
        for c in range(cams):
            y, x = offsets[b, c]
            out[b, c] = padded[b, c, y : y + height, x : x + width]
    return out
