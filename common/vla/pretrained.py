"""A pretrained VLA start (the `pretrain` stage's output) that `finetune` loads as `backbone.preset: pretrained`.

The directory is a Hugging Face checkpoint of the backbone (config.json, model.safetensors, tokenizer files,
preprocessor_config.json: what `load_pretrained_vlm` and the family's image processor read) plus the bridge
action head's weights and `pretrain.json` (tasks, dataset hash, objective, the vocabulary it was trained with).
Its vocabulary holds the placeholder and every latent token any strategy adds, so the token ids are the same for
every strategy and fine-tuning never grows the embedding. Loading is strict: every backbone and head weight
loads, and what stays freshly initialised is only what a strategy adds (la_align's projector).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.provenance import file_sha256
from common.vla.backbone import BackboneParams
from common.vla.model import VLA

HEAD_WEIGHTS, PRETRAIN_META, BACKBONE_WEIGHTS = "action_head.safetensors", "pretrain.json", "model.safetensors"
HEAD_PREFIX = "head."  # the head's names inside a VLA's state dict


def save_pretrained_start(model: VLA, directory: Path, meta: dict[str, Any]) -> None:
    """Write the backbone as a Hugging Face checkpoint, the head's weights and `meta` into `directory`."""
    from safetensors.torch import save_file

    backbone = model.backbone
    backbone.vlm.save_pretrained(directory)
    backbone.tokenizer.save_pretrained(directory)
    backbone.processor.image_processor.save_pretrained(directory)
    save_file({n: t.detach().cpu().contiguous() for n, t in model.head.state_dict().items()},
              str(directory / HEAD_WEIGHTS))
    (directory / PRETRAIN_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def pretrained_start(params: BackboneParams) -> Path | None:
    """The pretrain stage's directory `params` points at (a local directory with a head), else None (tiny, hub)."""
    if params.preset != "pretrained":
        return None
    directory = Path(params.pretrained)
    return directory if (directory / HEAD_WEIGHTS).is_file() else None


def read_start_meta(directory: Path) -> dict[str, Any]:
    """`pretrain.json` of a pretrained start."""
    return json.loads((directory / PRETRAIN_META).read_text())


def missing_tokens(directory: Path, tokens: tuple[str, ...]) -> list[str]:
    """The tokens a fine-tuning needs that the pretrained vocabulary lacks (they would grow the embedding)."""
    have = set(read_start_meta(directory)["vocabulary"])
    return [t for t in tokens if t not in have]


def load_head(model: VLA, directory: Path) -> None:
    """Load the pretrained head into `model.head`; any missing, unexpected or reshaped weight is an error."""
    from safetensors.torch import load_file

    state = load_file(str(directory / HEAD_WEIGHTS))
    own = model.head.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    reshaped = sorted(f"{n} {tuple(state[n].shape)} -> {tuple(own[n].shape)}" for n in set(own) & set(state)
                      if state[n].shape != own[n].shape)
    if missing or unexpected or reshaped:
        raise ValueError(f"{directory / HEAD_WEIGHTS}: the action head does not match this fine-tuning's (chunk, "
                         f"action/proprio dims, head settings): missing {missing[:4]}, unexpected {unexpected[:4]}, "
                         f"reshaped {reshaped[:4]}. Next step: rerun `dvc repro pretrain` with the same finetune "
                         "settings")
    model.head.load_state_dict(state)


def fresh_parameters(model: VLA) -> list[str]:
    """Parameters a pretrained start does not provide: everything outside the backbone and the action head."""
    return sorted(n for n, _ in model.named_parameters() if not n.startswith(("backbone.", HEAD_PREFIX)))


def start_sha256(params: BackboneParams) -> str:
    """What a fine-tuning started from: the weights' hashes of a local pretrained directory, else the hub id."""
    if params.preset != "pretrained":
        return ""
    directory = Path(params.pretrained)
    files = [directory / BACKBONE_WEIGHTS, directory / HEAD_WEIGHTS]
    if not files[0].is_file():
        return params.pretrained
    return ",".join(file_sha256(f) for f in files if f.is_file())

