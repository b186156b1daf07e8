"""A trained tokenizer on disk: model.pt (weights) + meta.json (what downstream stages read instead of retyping)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from common.action_vq.model import ActionTokenizer, TokenizerParams
from common.cli import StageError
from common.config import ParamsError, from_dict

MODEL_FILE, META_FILE = "model.pt", "meta.json"
REQUIRED_META = ("chunk", "action_dim", "tokens_per_chunk", "vocab_size", "normalization", "normalization_low",
                 "normalization_high", "model", "code_version")


def read_meta(model_dir: Path, required: tuple[str, ...], stage: str) -> dict[str, Any]:
    """meta.json of a model folder, with a clear error naming the missing file or keys and the stage to rerun."""
    path = Path(model_dir) / META_FILE
    if not path.is_file() or not (Path(model_dir) / MODEL_FILE).is_file():
        raise StageError(f"{model_dir}: no {MODEL_FILE} + {META_FILE}. Next step: run `dvc repro {stage}`")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise StageError(f"{path}: not valid JSON ({exc}). Next step: rerun `dvc repro {stage}`") from exc
    missing = [key for key in required if key not in meta]
    if missing:
        raise StageError(f"{path}: missing key(s) {missing}. Next step: rerun `dvc repro {stage}`")
    return meta


def load_weights(model: torch.nn.Module, model_dir: Path, stage: str, shape_fields: str) -> None:
    """Load model.pt into `model`, turning a shape mismatch with meta.json into a clear error."""
    state = torch.load(Path(model_dir) / MODEL_FILE, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise StageError(
            f"{model_dir}: {MODEL_FILE} does not fit the model {META_FILE} describes ({shape_fields}): "
            f"{first[0].strip()}. Next step: rerun `dvc repro {stage}` so that both are written together"
        ) from exc


def load_tokenizer(model_dir: Path) -> tuple[ActionTokenizer, dict[str, Any]]:
    """The trained tokenizer (eval mode, CPU) and its metadata."""
    meta = read_meta(model_dir, REQUIRED_META, "action_vq")
    try:
        params = from_dict(TokenizerParams, meta["model"], prefix="model", source=str(Path(model_dir) / META_FILE))
        tokenizer = ActionTokenizer(params, int(meta["chunk"]), int(meta["action_dim"]))
    except (ParamsError, ValueError) as exc:
        raise StageError(f"{model_dir}/{META_FILE}: {exc}. Next step: rerun `dvc repro action_vq`") from exc
    load_weights(tokenizer, model_dir, "action_vq", f"chunk={meta['chunk']}, action_dim={meta['action_dim']}")
    if (tokenizer.tokens_per_chunk, params.vocab_size) != (meta["tokens_per_chunk"], meta["vocab_size"]):
        raise StageError(f"{model_dir}/{META_FILE}: tokens_per_chunk/vocab_size {meta['tokens_per_chunk']}/"
                         f"{meta['vocab_size']} disagree with the model's {tokenizer.tokens_per_chunk}/"
                         f"{params.vocab_size}. Next step: rerun `dvc repro action_vq`")
    return tokenizer.eval(), meta
