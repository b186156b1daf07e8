"""Load the trained latent action model (models/lam/{model.pt, meta.json}) back into a LatentActionModel.

It lives here rather than in common/lam so that the lam stage's code (and DVC's hash of it) stays as trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.action_vq.checkpoint import load_weights, read_meta
from common.cli import StageError
from common.config import ParamsError, from_dict
from common.lam.features import FeatureError
from common.lam.model import LamModelParams, LatentActionModel

REQUIRED_META = ("gap", "codebook_size", "codes_per_transition", "code_dim", "camera", "image_size", "model",
                 "code_version")


def load_lam(model_dir: Path) -> tuple[LatentActionModel, dict[str, Any]]:
    """The trained LAM (eval mode, CPU) and its metadata."""
    meta = read_meta(model_dir, REQUIRED_META, "lam")
    try:
        params = from_dict(LamModelParams, meta["model"], prefix="model", source=str(Path(model_dir) / "meta.json"))
        lam = LatentActionModel(params, int(meta["image_size"]))
    except (ParamsError, FeatureError) as exc:
        raise StageError(f"{model_dir}/meta.json: {exc}. Next step: rerun `dvc repro lam`") from exc
    for key in ("codebook_size", "codes_per_transition", "code_dim"):
        if meta[key] != getattr(params, key):
            raise StageError(f"{model_dir}/meta.json: {key} = {meta[key]} but model.{key} = "
                             f"{getattr(params, key)}. Next step: rerun `dvc repro lam`")
    load_weights(lam, model_dir, "lam", f"image_size={meta['image_size']}, model={meta['model']}")
    return lam.eval(), meta
