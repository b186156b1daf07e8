"""Run the `lam` stage: `python -m stages.lam [--params params.yaml]`."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from common.atomic import atomic_dir, write_json
from common.cli import StageError, run_stage
from common.config import to_dict
from common.demos import validate_file
from common.lam.data import FramePairs
from common.lam.evaluate import evaluate
from common.lam.features import FeatureError
from common.lam.model import LatentActionModel
from common.lam.objective import LamWithActionHead, lam_loss
from common.provenance import code_fingerprint, file_sha256
from common.tracking import StageRun, TrackingParams
from common.train import TrainResult, resume_fields, train
from stages.lam import CHECKPOINTS, CODE, DEMOS, META_FILE, METRICS, MODEL_DIR, MODEL_FILE, STAGE, Params

log = logging.getLogger(__name__)


def run_fingerprint(params: Params, dataset_hash: str, code: str) -> str:
    """What a checkpoint must match to be resumed: everything but the logging cadence (and the step count
    under a constant learning rate)."""
    config = to_dict(params)
    config["train"] = resume_fields(params.train)
    config.pop("eval")
    config.pop("threads")  # speed only
    return hashlib.sha256(json.dumps([config, dataset_hash, code], sort_keys=True).encode()).hexdigest()[:16]


def model_meta(params: Params, image_size: int, action_dim: int, dataset_hash: str, code: str,
               result: TrainResult) -> dict[str, Any]:
    """What downstream stages read instead of retyping: gap, vocabulary, code shape, inputs."""
    return {
        "gap": params.gap,
        "codebook_size": params.model.codebook_size,
        "codes_per_transition": params.model.codes_per_transition,
        "code_dim": params.model.code_dim,
        "camera": params.camera,
        "image_size": image_size,
        "input": params.model.input,
        "model": to_dict(params.model),
        "action_dim": action_dim,
        "action_normalization": params.normalization,
        "dataset_sha256": dataset_hash,
        "code_version": code,
        "train_steps": result.steps,
        "seed": params.train.seed,
    }


def main(params: Params, tracking: TrackingParams, root: Path = Path(".")) -> dict[str, Any]:
    """Train the LAM, evaluate it on held-out episodes, save the model with its metadata."""
    demos = root / DEMOS
    meta = validate_file(demos, params.val_fraction)
    if params.camera not in meta.cameras:
        raise StageError(f"lam.camera = {params.camera!r}: the dataset has {list(meta.cameras)}; pick one of them")
    image_size, action_dim = meta.image_size[0], meta.action_space.dim
    dataset_hash, code = file_sha256(demos), code_fingerprint(*CODE)
    train_pairs = FramePairs.load(demos, "train", params.camera, params.gap, params.normalization,
                                  val_fraction=params.val_fraction)
    val_pairs = FramePairs.load(demos, "val", params.camera, params.gap, params.normalization,
                                  val_fraction=params.val_fraction)
    log.info("%d training pairs, %d held-out pairs (gap %d)", len(train_pairs), len(val_pairs), params.gap)

    if params.threads:
        torch.set_num_threads(params.threads)
    torch.manual_seed(params.train.seed)
    try:
        lam = LatentActionModel(params.model, image_size)
    except FeatureError as exc:
        raise StageError(str(exc)) from exc
    untrained = copy.deepcopy(lam)  # the probes' floor: the same network before training
    model = LamWithActionHead(lam, params.gap, action_dim, params.action_head_weight, params.action_head_fraction)
    batch_at = lambda step, process: train_pairs.sample(params.train.seed, step, process, params.train.batch_size)  # noqa: E731

    with StageRun(STAGE, to_dict(params), tracking, root) as run:
        result = train(model, lam_loss, batch_at, params.train, root / CHECKPOINTS,
                       run_fingerprint(params, dataset_hash, code), run)
        lam = lam.cpu()
        metrics = evaluate(lam, untrained, train_pairs, val_pairs, params.eval, params.model.input == "pixels",
                           params.train.seed)
        metrics.update(train_steps=result.steps, train_pairs=len(train_pairs))
        with atomic_dir(root / MODEL_DIR) as tmp:
            torch.save(lam.state_dict(), tmp / MODEL_FILE)
            write_json(tmp / META_FILE, model_meta(params, image_size, action_dim, dataset_hash, code, result))
        write_json(root / METRICS, metrics)
        run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        run.log_metrics({"samples_per_second": result.samples_per_second, "peak_memory_mb": result.peak_memory_mb,
                         "data_wait_fraction": result.data_wait_fraction})
        run.set_tags({"dataset.sha256": dataset_hash})
    log.info("lam: %s", json.dumps({k: metrics[k] for k in ("code_usage", "controllability_gap",
                                                             "probe_mlp_r2_trained", "probe_mlp_r2_untrained")}))
    return metrics


if __name__ == "__main__":
    run_stage(STAGE, Params, main)
