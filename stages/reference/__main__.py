"""Run the `reference` stage: `python -m stages.reference [--params params.yaml]`."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from common.atomic import atomic_dir, remove_stale_partials, write_json
from common.cli import run_stage
from common.config import to_dict
from common.demos import training_demos
from common.provenance import code_fingerprint, file_sha256
from common.reference.data import held_out_l1, load_samples, training_batch
from common.reference.model import ReferenceSpec, l1_objective, make_reference
from common.reference.policy import save_reference, stats_to_json
from common.tracking import StageRun, TrackingParams
from common.train import CurveRecorder, latest_checkpoint, resume_fields, train
from stages.reference import CHECKPOINTS, CODE, DEMOS, METRICS, MODEL_DIR, PLOTS, STAGE, Params

log = logging.getLogger(__name__)
HISTORY = "history.jsonl"  # the curve so far, beside the checkpoints, so that a resumed run plots all of it


def run_fingerprint(params: Params, dataset_hash: str, code: str) -> str:
    """What a checkpoint must match to be resumed: everything but the cadence, evaluation and thread count (and
    the step count under a constant learning rate)."""
    config = to_dict(params)
    config["train"] = resume_fields(params.train)
    config.pop("eval")
    config.pop("threads")  # speed only
    return hashlib.sha256(json.dumps([config, dataset_hash, code], sort_keys=True).encode()).hexdigest()[:16]


def main(params: Params, tracking: TrackingParams, root: Path) -> dict[str, Any]:
    """Train the reference policy, score it on the val split, save it with its metadata and training curve."""
    if params.threads:
        torch.set_num_threads(params.threads)
    demos = root / DEMOS
    for stale in remove_stale_partials(root / MODEL_DIR):
        log.info("removed %s left by a killed run", stale)
    data, action_stats, proprio_stats = training_demos(demos, params.cameras, "reference.cameras", "pick from those",
                                                       val_fraction=params.val_fraction)
    train_set, val_set = (load_samples(demos, split, params.cameras, data.tasks, params.chunk, action_stats,
                                       proprio_stats, params.normalization, val_fraction=params.val_fraction)
                          for split in ("train", "val"))
    spec = ReferenceSpec(params.chunk, data.action_space.dim, data.proprio_dim, params.cameras, data.image_size[0],
                         data.tasks, params.model)
    model = make_reference(spec, params.train.seed)
    log.info("reference: %d training samples (%d episodes), %d held-out; %d parameters", len(train_set),
             train_set.episodes, len(val_set), sum(p.numel() for p in model.parameters()))

    dataset_hash, code = file_sha256(demos), code_fingerprint(*CODE)
    fingerprint = run_fingerprint(params, dataset_hash, code)
    checkpoints = root / CHECKPOINTS
    batch_at = lambda step, process: training_batch(train_set, params.train.seed, step, process,  # noqa: E731
                                                    params.train.batch_size, params.shift)
    with StageRun(STAGE, to_dict(params), tracking, root) as run:
        _, resume_step = latest_checkpoint(checkpoints, fingerprint, params.train.steps)
        curve = CurveRecorder(run, checkpoints / HISTORY, resume_step)
        started = time.perf_counter()
        result = train(model, l1_objective, batch_at, params.train, checkpoints, fingerprint, curve)  # type: ignore[arg-type]
        wall = time.perf_counter() - started
        model = model.cpu().eval()
        metrics = held_out_l1(model, val_set, params.eval.max_samples, params.eval.batch_size, action_stats,
                              params.normalization)
        metrics.update(train_steps=result.steps, train_samples=len(train_set),
                       train_l1=result.final_metrics.get("l1", float("nan")))
        # Timings and resume points vary between runs: MLflow only, so metrics/reference.json is reproducible.
        run_stats = {"resumed_from": result.resumed_from, "samples_per_second": result.samples_per_second,
                     "train_wall_seconds": wall, "peak_memory_mb": result.peak_memory_mb}
        meta = {"normalization": params.normalization, "cameras": list(params.cameras),
                "image_size": spec.image_size, "action_dim": spec.action_dim, "chunk": params.chunk,
                "proprio_dim": spec.proprio_dim, "tasks": list(data.tasks), "proprio_keys": list(data.proprio_keys),
                "action_names": list(data.action_space.names), "action_stats": stats_to_json(action_stats),
                "proprio_stats": stats_to_json(proprio_stats), "dataset_sha256": dataset_hash, "code_version": code,
                "train_steps": result.steps, "seed": params.train.seed}
        with atomic_dir(root / MODEL_DIR) as tmp:
            save_reference(model, tmp, meta)
        curve.write_csv(root / PLOTS)
        write_json(root / METRICS, metrics)
        run.log_metrics({**metrics, **run_stats})
        run.set_tags({"dataset.sha256": dataset_hash})
    log.info("reference: %s; trained in %.1f s (%.0f samples/s)",
             json.dumps({k: round(v, 4) for k, v in metrics.items() if k.startswith("val_")}), wall,
             result.samples_per_second)
    return {**metrics, **run_stats}


if __name__ == "__main__":
    run_stage(STAGE, Params, main)
