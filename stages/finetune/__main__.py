"""Run one `finetune` matrix item: `python -m stages.finetune --strategy la_tok --seed 0 [--params params.yaml]`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from common.atomic import atomic_dir, write_json
from common.cli import params_path, run_stage
from common.config import ParamsError, Problem, from_dict, read_yaml, to_dict
from common.cpu import kernel_pins
from common.demos.schema import Stats
from common.provenance import code_fingerprint
from common.tracking import StageRun, TrackingParams
from common.train import CurveRecorder, latest_checkpoint, resume_fields, train
from common.vla.build import added_tokens, save_vla
from common.vla.evaluate import evaluate
from common.vla.model import objective
from common.vla.pretrained import fresh_parameters, pretrained_start, start_sha256
from common.study import STRATEGY_SECTION, load_study
from common.vla.strategies import STRATEGIES, get_strategy
from stages.finetune import CHECKPOINT_ROOT, CODE, STAGE, Item, Params, outputs
from stages.finetune.setup import set_up

log = logging.getLogger(__name__)
HISTORY = "history.jsonl"  # the loss curve so far, kept beside the checkpoints so a resumed run plots it all


def load_strategy_cfg(path: Path, strategy: str, data: dict[str, Any] | None = None) -> Any:
    """`strategy_cfg.<strategy>` of the params file (`data`: the file, already read), in the strategy's own
    dataclass."""
    section = (read_yaml(path) if data is None else data).get(STRATEGY_SECTION, {})
    if strategy not in section:
        raise ParamsError(str(path), [Problem(f"{STRATEGY_SECTION}.{strategy}", None, "section is missing",
                                              f"add `{STRATEGY_SECTION}: {{{strategy}: {{...}}}}`")])
    return from_dict(get_strategy(strategy).cfg, section[strategy], f"{STRATEGY_SECTION}.{strategy}", str(path))


def run_fingerprint(params: Params, cfg: Any, item: Item, hashes: list[str], code: str) -> str:
    """What a checkpoint must match to be resumed: everything but the cadence and evaluation (and the step
    count under a constant learning rate)."""
    config = to_dict(params)
    config["train"] = resume_fields(params.train)
    config.pop("eval")
    config.pop("threads")  # speed only
    blob = json.dumps([config, to_dict(cfg), dataclasses.asdict(item), hashes, code], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def stats_json(stats: Stats) -> dict[str, list[float]]:
    """Normalization statistics as plain lists for meta.json (read back by common.vla.policy)."""
    return {f.name: getattr(stats, f.name).astype(float).tolist() for f in dataclasses.fields(stats)}


def main(params: Params, tracking: TrackingParams, root: Path, item: Item, cfg: Any) -> dict[str, Any]:
    """Train one strategy and seed, score it on held-out episodes, save the policy with its metadata."""
    setup = set_up(params, root, item, cfg)
    params, spec, model, hashes = setup.params, setup.spec, setup.model, setup.hashes
    action_stats, data_meta, layout = setup.action_stats, setup.data_meta, setup.model.layout
    start, start_hash = pretrained_start(params.backbone), start_sha256(params.backbone)  # "" for the tiny preset
    train_batches, val_batches = setup.train_batches, setup.val_batches

    train_params = dataclasses.replace(params.train, seed=item.seed)
    code = code_fingerprint(*CODE)
    # a new pretrained start must not resume an old start's checkpoints
    fingerprint = run_fingerprint(params, cfg, item, [*hashes, start_hash] if start_hash else hashes, code)
    checkpoints = root / CHECKPOINT_ROOT / item.name
    model_dir, metrics_path, plots_path = (root / p for p in outputs(item))
    batch_at = lambda step, process: train_batches.sample(item.seed, step, process,  # noqa: E731
                                                          train_params.batch_size)
    with StageRun(f"{STAGE}@{item.name}", {**to_dict(params), STRATEGY_SECTION: to_dict(cfg),
                                           "item": dataclasses.asdict(item)}, tracking, root) as run:
        _, resume_step = latest_checkpoint(checkpoints, fingerprint, train_params.steps)
        curve = CurveRecorder(run, checkpoints / HISTORY, resume_step)
        result = train(model, objective(cfg), batch_at, train_params, checkpoints, fingerprint, curve,
                       accumulate=params.grad_accum)
        metrics = evaluate(model, val_batches, params.eval.max_samples, params.eval.batch_size, action_stats,
                           params.normalization)
        metrics.update(train_steps=result.steps, train_samples=len(setup.train_set),
                       **{f"train_{k}": v for k, v in result.final_metrics.items()})
        # Timings and resume points differ from run to run: MLflow only, so the metrics file (and its hash in
        # dvc.lock) is reproducible.
        run_stats = {"resumed_from": result.resumed_from, "samples_per_second": result.samples_per_second,
                     "data_wait_fraction": result.data_wait_fraction, "peak_memory_mb": result.peak_memory_mb}
        meta = {"policy": "vla", "strategy": item.strategy, "seed": item.seed, "normalization": params.normalization,
                # what evaluation checks against the environment, at the top level (the full spec: "spec")
                "cameras": list(params.cameras), "image_size": spec.image_size, "action_dim": spec.action_dim,
                "chunk": params.chunk, "proprio_dim": spec.proprio_dim,
                "action_stats": stats_json(action_stats), "proprio_stats": stats_json(setup.proprio_stats),
                "augment": to_dict(params.augment), STRATEGY_SECTION: to_dict(cfg),
                "vocabulary": list(added_tokens(spec)), "layout": dataclasses.asdict(layout),
                "proprio_keys": list(data_meta.proprio_keys), "action_names": list(data_meta.action_space.names),
                "tasks": list(data_meta.tasks), "dataset_sha256": hashes[0], "latent_sha256": hashes[1:],
                "pretrained": {"source": params.backbone.pretrained, "sha256": start_hash,
                               "fresh": fresh_parameters(model) if start is not None else None},
                "code_version": code, "train_steps": result.steps, "kernel_pins": kernel_pins()}
        with atomic_dir(model_dir) as tmp:
            save_vla(model.cpu(), spec, tmp, meta)
        curve.write_csv(plots_path)
        write_json(metrics_path, metrics)
        run.log_metrics({k: v for k, v in {**metrics, **run_stats}.items() if isinstance(v, (int, float))})
        run.set_tags({"dataset.sha256": hashes[0], "strategy": item.strategy, "seed": str(item.seed)})
    log.info("%s: %s", item.name, json.dumps({k: round(v, 4) for k, v in metrics.items() if k.startswith("val_")}))
    return {**metrics, **run_stats}



def check_item(path: Path, item: Item, data: dict[str, Any] | None = None) -> None:
    """Before any work: every strategy name of the params file (`data`: the file, already read) is registered and
    has its section, and an item of study.items reads the file its strategy's targets come from (the item's DVC
    dep)."""
    entry = load_study(path, STRATEGIES, data).items.get(item.name)
    expected = item.reads().as_posix()
    if entry is not None and entry.reads != expected:
        raise ParamsError(str(path), [Problem(f"study.items.{item.name}.reads", entry.reads,
                                              f"is not what {item.strategy} reads", f"write {expected}")])


def _cli_main(params: Params, tracking: TrackingParams, root: Path, item: Item) -> None:
    path = params_path()
    data = read_yaml(path)
    check_item(path, item, data)
    main(params, tracking, root, item, load_strategy_cfg(path, item.strategy, data))


if __name__ == "__main__":
    run_stage(STAGE, Params, _cli_main, item=Item)
