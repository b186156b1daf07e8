"""Run the `action_vq` stage: `python -m stages.action_vq [--params params.yaml]`."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.action_vq.checkpoint import META_FILE, MODEL_FILE
from common.action_vq.data import PADDING, ActionChunks
from common.action_vq.evaluate import evaluate
from common.action_vq.model import ActionTokenizer
from common.action_vq.objective import TokenizerObjective, tokenizer_loss
from common.atomic import atomic_dir, write_json
from common.cli import run_stage
from common.config import to_dict
from common.demos import DemoReader, validate_file
from common.normalize import bounds
from common.provenance import code_fingerprint, file_sha256
from common.tracking import StageRun, TrackingParams
from common.train import TrainResult, resume_fields, train
from stages.action_vq import CHECKPOINTS, CODE, DEMOS, METRICS, MODEL_DIR, STAGE, Params

log = logging.getLogger(__name__)


def run_fingerprint(params: Params, dataset_hash: str, code: str) -> str:
    """What a checkpoint must match to be resumed: everything but the logging cadence (and the step count
    under a constant learning rate)."""
    config = to_dict(params)
    config["train"] = resume_fields(params.train)
    return hashlib.sha256(json.dumps([config, dataset_hash, code], sort_keys=True).encode()).hexdigest()[:16]


def model_meta(params: Params, tokenizer: ActionTokenizer, action_names: tuple[str, ...], low: np.ndarray,
               high: np.ndarray, dataset_hash: str, code: str, result: TrainResult) -> dict[str, Any]:
    """What extraction and fine-tuning read instead of retyping: K, vocabulary, action space, normalization."""
    return {
        "chunk": params.chunk,
        "tokens_per_chunk": tokenizer.tokens_per_chunk,
        "steps_per_token": params.model.steps_per_token,
        "vocab_size": params.model.vocab_size,
        "quantizer": params.model.quantizer,
        "code_dim": params.model.code_dim,
        "action_dim": len(action_names),
        "action_names": list(action_names),
        "normalization": params.normalization,
        "normalization_low": [float(v) for v in low],
        "normalization_high": [float(v) for v in high],
        "padding": PADDING,
        "model": to_dict(params.model),
        "dataset_sha256": dataset_hash,
        "code_version": code,
        "train_steps": result.steps,
        "seed": params.train.seed,
    }


def main(params: Params, tracking: TrackingParams, root: Path = Path(".")) -> dict[str, Any]:
    """Train the tokenizer, evaluate it on held-out episodes in action units, save it with its metadata."""
    demos = root / DEMOS
    meta = validate_file(demos, params.val_fraction)
    with DemoReader(demos, params.val_fraction) as reader:
        stats = reader.stats("actions")
    dataset_hash, code = file_sha256(demos), code_fingerprint(*CODE)
    train_chunks = ActionChunks.load(demos, "train", params.chunk, params.normalization, stats,
                                      val_fraction=params.val_fraction)
    val_chunks = ActionChunks.load(demos, "val", params.chunk, params.normalization, stats,
                                      val_fraction=params.val_fraction)
    log.info("%d training chunks, %d held-out chunks (K=%d)", len(train_chunks), len(val_chunks), params.chunk)

    # One thread: on a shared 2-core CPU, a second thread spin-waits on this small model (measured 20x slower per
    # step under load); it also keeps results independent of the machine's core count.
    torch.set_num_threads(1)
    torch.manual_seed(params.train.seed)
    tokenizer = ActionTokenizer(params.model, params.chunk, meta.action_space.dim)
    batch_at = lambda step, process: train_chunks.sample(params.train.seed, step, process, params.train.batch_size)  # noqa: E731

    with StageRun(STAGE, to_dict(params), tracking, root) as run:
        result = train(TokenizerObjective(tokenizer), tokenizer_loss, batch_at, params.train, root / CHECKPOINTS,
                       run_fingerprint(params, dataset_hash, code), run)
        tokenizer = tokenizer.cpu().eval()
        metrics = evaluate(tokenizer, train_chunks, val_chunks, stats, params.normalization, meta.action_space.names)
        metrics.update(train_steps=result.steps, train_chunks=len(train_chunks))
        low, high = bounds(stats, params.normalization)
        with atomic_dir(root / MODEL_DIR) as tmp:
            torch.save(tokenizer.state_dict(), tmp / MODEL_FILE)
            write_json(tmp / META_FILE, model_meta(params, tokenizer, meta.action_space.names, low, high,
                                                   dataset_hash, code, result))
        write_json(root / METRICS, metrics)
        run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        per_dim = metrics["per_dimension"]
        run.log_metrics({f"{dim}/{k}": v for dim, values in per_dim.items() for k, v in values.items()})
        # Timings go to MLflow only: the metrics file (and its hash in dvc.lock) stays reproducible.
        run.log_metrics({"peak_memory_mb": result.peak_memory_mb, "data_wait_fraction": result.data_wait_fraction,
                         "train_samples_per_second": result.samples_per_second})
        run.set_tags({"dataset.sha256": dataset_hash})
    log.info("action_vq: %s", json.dumps({k: metrics[k] for k in (
        "worst_rmse_share_of_range", "worst_mae_share_of_range", "code_usage", "perplexity", "tokens_per_chunk")}))
    return metrics


if __name__ == "__main__":
    run_stage(STAGE, Params, main)
