"""Read the extract stage's latent sidecars (common.latents) and check they fit this finetune.

The sidecar's own structure (every demo present, shapes, dtypes, id ranges) is validated by common.latents and
reported as a DatasetError. What only finetune knows is checked here and reported as a StageError: the latents
must come from these demonstrations (dataset hash), and action tokens must encode chunks of study.chunk with
the demos' action dimension.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from common.cli import StageError
from common.demos.schema import DatasetError
from common.latents import LatentFile, validate_sidecar
from common.latents.schema import CODES, TOKENS, VECTORS

__all__ = ["CODES", "TOKENS", "VECTORS", "read_latents", "check_meta"]
NEXT_STEP = "Next step: run `dvc repro extract` (it rebuilds the sidecars from the current demos and models)"


def read_latents(path: Path, kind: str, dataset_sha256: str, lengths: dict[str, int], chunk: int,
                 action_dim: int) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """The sidecar's meta and, per demo in `lengths`, its arrays; mismatches raise DatasetError / StageError."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file; the strategy needs {kind} latents. {NEXT_STEP}")
    meta = validate_sidecar(path, kind, lengths)
    check_meta(path, meta, kind, dataset_sha256, chunk, action_dim)
    with LatentFile(path, kind) as latents:
        return meta, {name: latents.episode(name) for name in lengths}


def check_meta(path: Path, meta: dict[str, Any], kind: str, dataset_sha256: str, chunk: int, action_dim: int) -> None:
    """The sidecar must be made from these demos and (action tokens) for this chunk and action dimension."""
    if meta["dataset_sha256"] != dataset_sha256:
        raise StageError(f"{path}: dataset_sha256 {meta['dataset_sha256'][:12]}... differs from the demos' "
                         f"{dataset_sha256[:12]}...: the latents were extracted from other demonstrations. "
                         f"{NEXT_STEP}")
    if kind == "action_vq":
        if int(meta["chunk"]) != chunk:
            raise StageError(f"{path}: chunk = {meta['chunk']} but study.chunk = {chunk}: the action tokens "
                             f"encode chunks of another length, from a tokenizer trained before K changed. Next "
                             f"step: `dvc repro action_vq extract` to retrain it with chunk {chunk}")
        if int(meta["action_dim"]) != action_dim:
            raise StageError(f"{path}: action_dim = {meta['action_dim']} but the demos' actions have {action_dim} "
                             f"dimensions. {NEXT_STEP}")
