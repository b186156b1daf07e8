"""The `vla` policy loader: a finetune output directory -> a Policy (one batched, gradient-free forward per call)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.demos.schema import Stats
from common.normalize import normalize, unnormalize
from common.policy import Observation, camera_images, check_actions, register_loader
from common.vla.augment import AugmentParams, eval_view
from common.vla.build import load_vla
from common.vla.model import ACTIONS, ATTENTION, IMAGES, INPUT_IDS, PROPRIO, VLA
from common.vla.prompt import left_pad, prompt_text


def stats_from_meta(raw: dict[str, Any]) -> Stats:
    """Normalization statistics as stored in meta.json (lists per statistic)."""
    return Stats(**{k: np.asarray(v, np.float32) for k, v in raw.items()})


class VlaPolicy:
    """A trained VLA: normalizes inputs with the training statistics, returns K actions in environment units."""

    def __init__(self, model: VLA, meta: dict[str, Any], directory: Path):
        spec = meta["spec"]
        self.model, self.directory = model, directory
        self.chunk, self.cameras, self.image_size = int(spec["chunk"]), tuple(spec["cameras"]), int(spec["image_size"])
        self.action_dim = int(spec["action_dim"])
        self.normalization = meta["normalization"]
        self.action_stats = stats_from_meta(meta["action_stats"])
        self.proprio_stats = stats_from_meta(meta["proprio_stats"])
        self.augment = AugmentParams(**meta["augment"])
        self.placeholders = model.layout.placeholders
        self.device = next(model.parameters()).device

    def act(self, obs: Observation) -> np.ndarray:
        """(B, chunk, action_dim) float32 actions for a batch of observations, in one forward pass."""
        images = camera_images(obs, self.cameras, self.image_size, str(self.directory))
        backbone = self.model.backbone
        rows = [backbone.prompt_ids(prompt_text(i, self.chunk, self.placeholders), len(self.cameras),
                                    self.image_size) for i in obs.instructions]
        ids, attention = left_pad(rows, backbone.tokenizer.pad_token_id)
        proprio = normalize(np.asarray(obs.proprio, np.float32), self.proprio_stats, self.normalization)
        batch = {INPUT_IDS: ids, ATTENTION: attention, IMAGES: eval_view(torch.from_numpy(images), self.augment),
                 PROPRIO: torch.from_numpy(proprio)}
        with torch.inference_mode():
            predicted = self.model({k: v.to(self.device) for k, v in batch.items()})[ACTIONS]
        actions = unnormalize(predicted.float().clamp(-1, 1).cpu().numpy(), self.action_stats, self.normalization)
        return check_actions(actions, obs, self.chunk, self.action_dim, str(self.directory))


@register_loader("vla")
def load(directory: Path, meta: dict[str, Any]) -> VlaPolicy:
    """Load a finetune output directory (models/finetune/<strategy>-<seed>)."""
    model, saved = load_vla(Path(directory))
    if torch.cuda.is_available():
        model = model.cuda()
    return VlaPolicy(model, saved, Path(directory))
