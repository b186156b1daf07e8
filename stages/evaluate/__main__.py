"""Run the `evaluate` stage: `python -m stages.evaluate --policy <built-in or dir> --name <out name>`."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from common.atomic import atomic_dir, remove_stale_partials, write_json
from common.cli import StageError, run_stage
from common.config import ParamsError, to_dict
from common.demos import DatasetMeta, DemoReader
from common.evaluation.metrics import summarize
from common.evaluation.rollout import EpisodeResult, RolloutStats, run_episodes
from common.evaluation.suites import plan_episodes, read_layouts, task_categories
from common.evaluation.video import write_gif
from common.evaluation.worker import SimSettings
from common.logs import progress
from common.policy import POLICY_KEY, Policy, PolicyError, is_builtin, load_policy, policy_meta
from common.provenance import code_fingerprint, file_sha256
from common.simulators import get_simulator
from common.tracking import StageRun, TrackingParams
from stages.evaluate import (
    CODE,
    DEMOS,
    EPISODES_FILE,
    META_FILE,
    STAGE,
    VIDEOS_DIR,
    Item,
    Params,
    metrics_path,
    results_dir,
)

log = logging.getLogger(__name__)


def check_policy_meta(meta: dict[str, Any], data: DatasetMeta, dataset_hash: str, where: str) -> None:
    """What the policy's meta.json declares must match the dataset and environment (checked before loading)."""
    declared = {"cameras": list(data.cameras), "image_size": data.image_size[0], "action_dim": data.action_space.dim}
    if "cameras" in meta and not set(meta["cameras"]) <= set(data.cameras):
        raise PolicyError(f"policy {where}: cameras {sorted(set(meta['cameras']) - set(data.cameras))} are not in "
                          f"the dataset's {list(data.cameras)}. Next step: retrain the policy on this dataset")
    for key in ("image_size", "action_dim"):
        if key in meta and meta[key] != declared[key]:
            raise PolicyError(f"policy {where}: meta.json {key} = {meta[key]}, the environment's is {declared[key]}. "
                              "Next step: retrain the policy for this dataset and environment")
    if "dataset_sha256" in meta and meta["dataset_sha256"] != dataset_hash:
        raise PolicyError(f"policy {where}: trained on dataset {meta['dataset_sha256'][:12]}, the current "
                          f"{DEMOS} is {dataset_hash[:12]}. Next step: `dvc repro` the policy's finetune stage")


def check_policy_fits(policy: Policy, data: DatasetMeta, where: str) -> None:
    """The loaded policy's cameras, image size and chunk must suit the environment (its action dim is checked on
    its first `act`, before any step)."""
    missing = [c for c in policy.cameras if c not in data.cameras]
    if missing:
        raise PolicyError(f"policy {where}: cameras {missing} are not in the dataset's {list(data.cameras)}. "
                          "Next step: retrain the policy on this dataset's cameras")
    if policy.cameras and policy.image_size != data.image_size[0]:
        raise PolicyError(f"policy {where}: image_size {policy.image_size}, the dataset's is {data.image_size[0]}. "
                          "Next step: retrain the policy on this dataset")
    if policy.chunk < 1:
        raise PolicyError(f"policy {where}: chunk = {policy.chunk}; it must return at least one action")


def episode_record(policy: str, result: EpisodeResult) -> dict[str, Any]:
    """One line of episodes.jsonl (the contract's fields)."""
    spec = result.spec
    return {"policy": policy, "task": spec.task, "suite": spec.suite, "categories": list(spec.categories),
            "episode": spec.episode, "layout_index": spec.layout_index, "seed": spec.seed,
            "success": result.success, "steps": result.steps, "steps_to_success": result.steps_to_success,
            "failure": result.failure, "error": result.error}


def video_name(result: EpisodeResult) -> str:
    """File name of an episode's video."""
    spec = result.spec
    return f"{spec.suite}__{spec.task}__ep{spec.episode}.gif"


def write_results(out_dir: Path, records: list[dict[str, Any]], run_meta: dict[str, Any],
                  results: list[EpisodeResult], fps: int) -> list[Path]:
    """episodes.jsonl, meta.json and the videos, as one folder that appears complete or not at all."""
    with atomic_dir(out_dir) as tmp:
        (tmp / EPISODES_FILE).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
        write_json(tmp / META_FILE, run_meta)
        videos = [r for r in results if r.frames]
        if videos:
            (tmp / VIDEOS_DIR).mkdir()
        for result in videos:
            write_gif(tmp / VIDEOS_DIR / video_name(result), result.frames, fps)
    return [out_dir / VIDEOS_DIR / video_name(r) for r in videos]


def main(params: Params, tracking: TrackingParams, root: Path, item: Item) -> dict[str, Any]:
    """Load the policy, roll it out on every suite, write per-episode results, videos and metrics."""
    if params.threads:
        # Two evaluations side by side, each with one torch thread per core, oversubscribe the CPU and OpenMP's
        # spinning threads slow inference 5-7x (the study: 400-500 s per evaluation instead of ~70 s).
        torch.set_num_threads(params.threads)
    out_dir, out_metrics = root / results_dir(item.name), root / metrics_path(item.name)
    for stale in (*remove_stale_partials(out_dir), *remove_stale_partials(out_metrics)):
        log.info("removed %s left by a killed run", stale)
    with DemoReader(root / DEMOS) as reader:
        data, layouts = reader.meta, read_layouts(reader)
    try:
        simulator = get_simulator(data.env)
    except ValueError as exc:
        raise StageError(f"{root / DEMOS}: env = {data.env!r}: {exc}") from exc
    problems = params.simulator_problems(simulator)
    if problems:
        raise ParamsError(f"{STAGE} (with the {simulator.name} simulator of {root / DEMOS})", problems)
    dataset_hash = file_sha256(root / DEMOS)
    where = item.policy if is_builtin(item.policy) else str(root / item.policy)
    meta = policy_meta(where)
    check_policy_meta(meta, data, dataset_hash, where)
    policy = load_policy(where, simulator.name)
    check_policy_fits(policy, data, where)
    categories = task_categories(data, params.categories, root / DEMOS)
    plan = plan_episodes(params.suites, data, layouts, categories, params.seed, params.videos_per_task, root / DEMOS)
    settings = SimSettings(simulator=simulator.name, policy_cameras=tuple(policy.cameras), video_camera=data.cameras[0],
                           image_size=data.image_size[0], max_steps=params.max_steps,
                           video_stride=max(1, round(data.control_hz / params.video_fps)))
    log.info("evaluating %s: %d episodes (%d tasks, suites %s), chunk %d, re-plan every %d steps", where, len(plan),
             len(data.tasks), [s.name for s in params.suites], policy.chunk, min(params.replan_every, policy.chunk))

    with StageRun(STAGE, {**to_dict(params), "policy": where, "name": item.name}, tracking, root) as run:
        stats, started = RolloutStats(), time.perf_counter()
        with progress(total=len(plan), desc=f"evaluate {item.name}") as bar:
            results = run_episodes(policy, plan, settings, params.replan_every, params.parallel_episodes,
                                   params.workers, data.action_space.dim, on_done=lambda r: bar.update(), stats=stats)
        wall = time.perf_counter() - started
        records = [episode_record(item.policy, r) for r in results]
        run_meta = {
            "policy": item.policy, "policy_meta": meta, "loader": meta[POLICY_KEY], "chunk": policy.chunk,
            "cameras": list(policy.cameras), "replan_every": min(params.replan_every, policy.chunk),
            "suites": [to_dict(s) for s in params.suites], "tasks": list(data.tasks),
            "categories": {t: list(c) for t, c in categories.items()}, "max_steps": params.max_steps,
            "seed": params.seed, "dataset_sha256": dataset_hash, "code_version": code_fingerprint(*CODE),
        }
        videos = write_results(out_dir, records, run_meta, results, params.video_fps)
        metrics = summarize(records)
        write_json(out_metrics, metrics)
        run.log_metrics({
            "success_rate": metrics["success"]["rate"], "wall_seconds": wall, "env_steps": stats.env_steps,
            "env_steps_per_second": stats.env_steps / wall, "policy_calls": stats.policy_calls,
            "policy_seconds": stats.policy_seconds,
            **{f"success_rate.{k}.{n}": v["rate"] for k in ("per_task", "per_suite", "per_category")
               for n, v in metrics[k].items()},
        })
        run.set_tags({"dataset.sha256": dataset_hash, "policy": item.policy})
        run.log_artifact(out_metrics)
        for video in videos:
            run.log_artifact(video)
    log.info("%s: success %.1f%% over %d episodes (%s); %d env steps in %.1f s (%.0f steps/s)", item.name,
             100 * metrics["success"]["rate"], len(records),
             ", ".join(f"{k} {100 * v['rate']:.0f}%" for k, v in metrics["per_suite"].items()),
             stats.env_steps, wall, stats.env_steps / wall)
    return metrics


if __name__ == "__main__":
    run_stage(STAGE, Params, main, item=Item)
