"""Saving and loading the reference policy, and its `reference` loader for common/policy.py's registry.

A policy directory holds `model.safetensors` and `meta.json` ("policy": "reference", the network's spec, the
normalization statistics and what the evaluation checks against the environment).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.demos.schema import Stats
from common.normalize import normalize, unnormalize
from common.policy import META_FILE, Observation, PolicyError, camera_images, check_actions, register_loader
from common.reference.model import IMAGES, PROPRIO, TASK, ReferenceNet, ReferenceSpec

LOADER = "reference"  # meta.json "policy"
WEIGHTS = "model.safetensors"


def stats_to_json(stats: Stats) -> dict[str, list[float]]:
    """Normalization statistics as plain lists for meta.json."""
    return {name: np.asarray(value, np.float64).tolist() for name, value in vars(stats).items()}


def stats_from_json(raw: dict[str, Any]) -> Stats:
    """Inverse of `stats_to_json`."""
    return Stats(**{k: np.asarray(v, np.float32) for k, v in raw.items()})


def save_reference(model: ReferenceNet, directory: Path, meta: dict[str, Any]) -> None:
    """Write the weights and meta.json (with the spec under "spec") into `directory`."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(directory / WEIGHTS))
    (directory / META_FILE).write_text(json.dumps({**meta, "policy": LOADER, "spec": model.spec.to_json()},
                                                  indent=2, sort_keys=True) + "\n")


def load_reference(directory: Path) -> tuple[ReferenceNet, dict[str, Any]]:
    """Rebuild a saved network from its directory alone, in eval mode; weights that do not fit are an error."""
    from safetensors.torch import load_file

    meta = json.loads((Path(directory) / META_FILE).read_text())
    model = ReferenceNet(ReferenceSpec.from_json(meta["spec"]))
    model.load_state_dict(load_file(str(Path(directory) / WEIGHTS)), strict=True)
    return model.eval(), meta


class ReferencePolicy:
    """A trained reference network as a Policy: normalizes proprio, returns K actions in environment units."""

    def __init__(self, model: ReferenceNet, meta: dict[str, Any], directory: Path):
        spec = model.spec
        self.model, self.directory = model.eval(), Path(directory)
        self.chunk, self.cameras, self.image_size = spec.chunk, spec.cameras, spec.image_size
        self.action_dim, self.tasks = spec.action_dim, spec.tasks
        self.normalization = meta["normalization"]
        self.action_stats = stats_from_json(meta["action_stats"])
        self.proprio_stats = stats_from_json(meta["proprio_stats"])

    def act(self, obs: Observation) -> np.ndarray:
        """(B, chunk, action_dim) float32 actions for a batch of observations, in one forward pass."""
        unknown = sorted(set(obs.tasks) - set(self.tasks))
        if unknown:
            raise PolicyError(f"{self.directory}: tasks {unknown} were not trained (the policy knows "
                              f"{list(self.tasks)}). Next step: retrain it on demos of those tasks")
        images = camera_images(obs, self.cameras, self.image_size, str(self.directory))
        batch = {IMAGES: torch.from_numpy(np.ascontiguousarray(images, np.uint8)),
                 PROPRIO: torch.from_numpy(normalize(np.asarray(obs.proprio, np.float32), self.proprio_stats,
                                                     self.normalization)),
                 TASK: torch.tensor([self.tasks.index(t) for t in obs.tasks], dtype=torch.int64)}
        with torch.inference_mode():
            predicted = self.model(batch).clamp(-1, 1).numpy()
        actions = unnormalize(predicted, self.action_stats, self.normalization)
        return check_actions(actions, obs, self.chunk, self.action_dim, str(self.directory))


@register_loader(LOADER)
def load(directory: Path, meta: dict[str, Any]) -> ReferencePolicy:
    """Load a reference stage output directory (models/reference)."""
    model, saved = load_reference(Path(directory))
    return ReferencePolicy(model, saved, Path(directory))
