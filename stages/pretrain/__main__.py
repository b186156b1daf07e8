"""Run the `pretrain` stage: `python -m stages.pretrain [--params params.yaml]`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from common.atomic import atomic_dir, write_json
from common.cli import StageError, params_path, run_stage
from common.config import to_dict
from common.cpu import kernel_pins
from common.demos import DemoReader, training_demos
from common.provenance import code_fingerprint, file_sha256
from common.tracking import StageRun, TrackingParams
from common.train import CurveRecorder, latest_checkpoint, resume_fields, train
from common.vla.build import VlaSpec, make_vla
from common.vla.data import Batches, Episodes
from common.vla.tokenizer import task_instructions
from common.vla.evaluate import evaluate
from common.vla.model import objective
from common.vla.pretrained import save_pretrained_start
from common.vla.prompt import prompt_text
from common.vla.strategies import every_latent_token, get_strategy
from stages.pretrain import (CHECKPOINTS, CODE, DEMOS, METRICS, MODEL, OBJECTIVE, PLOTS, STAGE, Architecture, Params,
                             read_architecture, read_latent_meta)

log = logging.getLogger(__name__)
HISTORY = "history.jsonl"  # the loss curve so far, beside the checkpoints, so a resumed run plots it all
STRATEGY = "baseline"  # the layout and objective pretrained: placeholders_per_step x chunk, L1 only


def pretraining_spec(arch: Architecture, action_dim: int, proprio_dim: int, image_size: int) -> VlaSpec:
    """Finetune's baseline VLA, built from random weights (the tiny preset of finetune's backbone, LoRA off)."""
    backbone = dataclasses.replace(arch.backbone, preset="tiny", pretrained="",
                                   lora=dataclasses.replace(arch.backbone.lora, rank=0))
    return VlaSpec(STRATEGY, arch.chunk, action_dim, proprio_dim, arch.cameras, image_size, {}, 0,
                   arch.placeholders_per_step, backbone, arch.head)


def run_fingerprint(params: Params, spec: VlaSpec, vocabulary: tuple[str, ...], augment: dict[str, Any],
                    dataset: str, code: str) -> str:
    """What a checkpoint must match to be resumed: everything but the cadence, evaluation and threads."""
    blob = json.dumps([resume_fields(params.train), spec.to_json(), vocabulary, augment, dataset, code], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def main(params: Params, arch: Architecture, latent_meta: dict[str, dict[str, Any]], tracking: TrackingParams,
         root: Path = Path(".")) -> dict[str, Any]:
    """Train the shared start on the pretraining demos, score it on their val split, save backbone + head."""
    if params.threads:
        torch.set_num_threads(params.threads)
    demos = root / DEMOS
    data_meta, action_stats, proprio_stats = training_demos(demos, arch.cameras, "finetune.cameras",
                                                            "rerun `dvc repro collect_pretrain`",
                                                            val_fraction=params.val_fraction)
    with DemoReader(demos, params.val_fraction) as reader:
        tasks = sorted({reader.episode(n, cameras=()).task for n in reader.names})
    train_set, val_set = (Episodes.load(demos, split, arch.cameras, action_stats, proprio_stats, arch.normalization,
                                        val_fraction=params.val_fraction) for split in ("train", "val"))
    image_size = data_meta.image_size[0]
    spec = pretraining_spec(arch, data_meta.action_space.dim, data_meta.proprio_dim, image_size)
    vocabulary = every_latent_token(latent_meta)
    try:
        model = make_vla(spec, params.train.seed, vocabulary,
                         instructions=task_instructions(data_meta.env, train_set.instructions + val_set.instructions))
    except ValueError as exc:
        raise StageError(f"{STAGE}: {exc}") from exc
    layout, backbone = model.layout, model.backbone
    prompt = lambda instruction: backbone.prompt_ids(  # noqa: E731
        prompt_text(instruction, arch.chunk, layout.placeholders), len(arch.cameras), image_size)
    train_batches, val_batches = (Batches(s, prompt, backbone.tokenizer.pad_token_id, arch.chunk, model.strategy,
                                          layout, arch.augment) for s in (train_set, val_set))
    log.info("%s: %d tasks, %d training samples, %d held-out; vocabulary +%d tokens; %d parameters", STAGE,
             len(tasks), len(train_set), len(val_set), len(vocabulary), sum(p.numel() for p in model.parameters()))

    dataset, code = file_sha256(demos), code_fingerprint(*CODE)
    fingerprint = run_fingerprint(params, spec, vocabulary, to_dict(arch.augment), dataset, code)
    checkpoints = root / CHECKPOINTS
    batch_at = lambda step, process: train_batches.sample(params.train.seed, step, process,  # noqa: E731
                                                          params.train.batch_size)
    with StageRun(STAGE, {**to_dict(params), "finetune": to_dict(arch), "latent_meta": latent_meta}, tracking,
                  root) as run:
        _, resume_step = latest_checkpoint(checkpoints, fingerprint, params.train.steps)
        curve = CurveRecorder(run, checkpoints / HISTORY, resume_step)
        loss = objective(get_strategy(STRATEGY).cfg(action_weight=1.0))
        result = train(model, loss, batch_at, params.train, checkpoints, fingerprint, curve)
        metrics = evaluate(model, val_batches, params.eval.max_samples, params.eval.batch_size, action_stats,
                           arch.normalization)
        metrics.update(train_steps=result.steps, train_samples=len(train_set), tasks=len(tasks),
                       **{f"train_{k}": v for k, v in result.final_metrics.items()})
        meta = {"stage": STAGE, "tasks": tasks, "study_tasks_excluded": True, "dataset_sha256": dataset,
                "objective": OBJECTIVE, "strategy_layout": STRATEGY, "vocabulary": list(vocabulary),
                "latent_meta": latent_meta, "spec": spec.to_json(), "train": to_dict(params.train),
                "augment": to_dict(arch.augment), "normalization": arch.normalization, "train_steps": result.steps,
                "code_version": code, "kernel_pins": kernel_pins()}
        with atomic_dir(root / MODEL) as tmp:
            save_pretrained_start(model.cpu(), tmp, meta)
        curve.write_csv(root / PLOTS)
        write_json(root / METRICS, metrics)
        run.log_metrics({k: v for k, v in {**metrics, "samples_per_second": result.samples_per_second,
                                           "resumed_from": result.resumed_from}.items()
                         if isinstance(v, (int, float))})
        run.set_tags({"dataset.sha256": dataset})
    log.info("%s: %s", STAGE, json.dumps({k: round(v, 4) for k, v in metrics.items() if k.startswith("val_")}))
    return {**metrics, "resumed_from": result.resumed_from, "samples_per_second": result.samples_per_second}


def _cli_main(params: Params, tracking: TrackingParams, root: Path) -> None:
    path = params_path()
    main(params, read_architecture(path), read_latent_meta(path), tracking, root)


if __name__ == "__main__":
    run_stage(STAGE, Params, _cli_main)
