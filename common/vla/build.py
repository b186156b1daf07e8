"""Build a VLA from settings, save it with everything needed to rebuild it, and load it back from its directory.

The directory holds `model.safetensors` (the trained weights), `meta.json` (strategy, chunk, dims, cameras,
image size, normalization statistics, backbone/head settings, vocabularies: evaluation reads these, it never
retypes training settings) and the backbone's config, tokenizer and image processor.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from common.config import from_dict, to_dict
from common.vla.backbone import BackboneParams, build_backbone, load_backbone, save_backbone_files
from common.vla.head import HeadParams
from common.vla.model import VLA
from common.vla.pretrained import load_head, missing_tokens, pretrained_start
from common.vla.prompt import REQUEST
from common.vla.strategies import PLACEHOLDER, get_strategy

WEIGHTS, META = "model.safetensors", "meta.json"


@dataclasses.dataclass(frozen=True)
class VlaSpec:
    """What defines a VLA's architecture (all of it recorded in meta.json)."""

    strategy: str
    chunk: int
    action_dim: int
    proprio_dim: int
    cameras: tuple[str, ...]
    image_size: int
    latent_meta: dict[str, Any]  # the sidecar's meta ({} for the baseline)
    align_hidden: int  # width of the strategy's own modules, `Strategy.module_width` (la_align's projector; 0: none)
    placeholders_per_step: int  # P: baseline and la_align prompt P x chunk placeholders (the study: 5)
    backbone: BackboneParams
    head: HeadParams

    def to_json(self) -> dict[str, Any]:
        """Plain data for meta.json."""
        data = to_dict(self)
        data["cameras"] = list(self.cameras)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "VlaSpec":
        """Parse the `spec` entry of meta.json."""
        return from_dict(cls, {**data, "cameras": list(data["cameras"])}, prefix="spec", source=META)


def added_tokens(spec: VlaSpec) -> tuple[str, ...]:
    """The placeholder and the strategy's latent vocabulary, in the order they join the tokenizer."""
    return (PLACEHOLDER, *get_strategy(spec.strategy).vocabulary(spec.latent_meta))


def make_vla(spec: VlaSpec, seed: int, vocabulary: tuple[str, ...] | None = None, *,
             instructions: tuple[str, ...]) -> VLA:
    """A freshly initialised VLA (tiny: random backbone; pretrained: loaded weights, LoRA if configured).

    `instructions`: what a tiny backbone learns its vocabulary from (`task_instructions`). `vocabulary`: the tokens
    to add (default: the spec's, `added_tokens`). From the pretrain stage's output the
    action head loads too, and every token must already be in its vocabulary (the ids then match across strategies).
    """
    tokens = added_tokens(spec) if vocabulary is None else vocabulary
    start = pretrained_start(spec.backbone)
    if start is not None and (missing := missing_tokens(start, tokens)):
        raise ValueError(f"{start}: the pretrained vocabulary lacks {len(missing)} tokens this strategy needs "
                         f"({missing[:3]}...). Next step: rerun `dvc repro pretrain` (its vocabulary follows "
                         "lam.model and action_vq.model)")
    backbone = build_backbone(spec.backbone, REQUEST, tokens, spec.image_size, seed, instructions)
    model = _assemble(spec, backbone)
    if start is not None:
        load_head(model, start)
    return model


def _assemble(spec: VlaSpec, backbone: Any) -> VLA:
    strategy = get_strategy(spec.strategy)
    layout = strategy.layout(spec.chunk, spec.latent_meta, spec.placeholders_per_step)
    return VLA(backbone, strategy, layout, spec.head, spec.chunk, spec.action_dim, spec.proprio_dim,
               strategy.vocabulary(spec.latent_meta), spec.align_hidden, spec.latent_meta)


def weights_to_save(model: VLA) -> dict[str, torch.Tensor]:
    """Every tensor, except under LoRA on pretrained weights: then every adapter (frozen ones too), the head and
    whatever else trained, not the frozen base weights (a reload takes them from the checkpoint).

    A grown embedding (SmolVLM's new rows) is kept too: its new rows are initialised at random.
    """
    state = model.state_dict()
    if model.backbone.base_from_checkpoint:
        trainable, grown = {n for n, p in model.named_parameters() if p.requires_grad}, model.backbone.grown
        state = {n: t for n, t in state.items() if n in trainable or "lora_" in n or not n.startswith("backbone.")
                 or (grown and ("embed_tokens" in n or "lm_head" in n))}
    return {n: t.detach().cpu().contiguous() for n, t in state.items()}


def save_vla(model: VLA, spec: VlaSpec, directory: Path, meta: dict[str, Any]) -> None:
    """Write weights, meta.json (with the spec under "spec") and the backbone's files into `directory`."""
    from safetensors.torch import save_file

    save_file(weights_to_save(model), str(directory / WEIGHTS))
    save_backbone_files(model.backbone, directory)
    (directory / META).write_text(json.dumps({**meta, "spec": spec.to_json()}, indent=2, sort_keys=True) + "\n")


def load_vla(directory: Path) -> tuple[VLA, dict[str, Any]]:
    """Rebuild a saved VLA from its directory alone; missing or unexpected weights are an error."""
    from safetensors.torch import load_file

    meta = json.loads((directory / META).read_text())
    spec = VlaSpec.from_json(meta["spec"])
    model = _assemble(spec, load_backbone(directory, spec.backbone))
    state = load_file(str(directory / WEIGHTS))
    missing, unexpected = model.load_state_dict(state, strict=False)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    absent = [n for n in missing if n not in frozen]
    if absent or unexpected:
        raise ValueError(f"{directory / WEIGHTS}: weights do not match the model "
                         f"(missing {absent[:3]}, unexpected {list(unexpected)[:3]})")
    return model.eval(), meta
