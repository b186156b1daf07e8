"""Run the `collect` stage: `python -m stages.collect [--params params.yaml]`."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import remove_stale_partials, write_json
from common.cli import StageError, run_stage
from common.config import to_dict
from common.demos import DatasetMeta, DemoWriter
from common.logs import progress
from common.provenance import code_fingerprint
from common.sim import ACTION_SPACE, PROPRIO_DIM, PROPRIO_KEYS, env_version
from common.tasks import task_info
from common.tracking import StageRun, TrackingParams
from stages.collect import CODE, DEMOS, METRICS, STAGE, Params
from stages.collect.rollout import Job, SimSpec, TaskTally, collect_attempts, probe_task, start_workers

log = logging.getLogger(__name__)


def dataset_meta(params: Params, heldout: dict[str, list[dict[str, Any]]], rate_hz: float) -> DatasetMeta:
    """The file-level metadata that downstream stages read instead of retyping settings."""
    return DatasetMeta(
        env="metaworld",
        env_version=env_version(),
        cameras=tuple(params.cameras),
        image_size=(params.image_size, params.image_size),
        image_origin="upright",
        action_space=ACTION_SPACE,
        proprio_keys=PROPRIO_KEYS,
        proprio_dim=PROPRIO_DIM,
        control_hz=rate_hz,
        collection_seed=params.seed,
        code_version=code_fingerprint(*CODE),
        tasks=tuple(params.tasks),
        heldout_layouts=heldout,
        extra={
            "instructions": {t: task_info(t).instruction for t in params.tasks},
            "categories": {t: list(task_info(t).categories) for t in params.tasks},
            "split_rule": "per task, the first demos_per_task successes (by layout id) are train, the rest val",
        },
    )


def summarize(params: Params, tallies: dict[str, TaskTally]) -> dict[str, Any]:
    """Expert success rates and episode counts: deterministic, so the metrics file's hash is reproducible."""
    per_task = {
        task: {
            "attempts": t.attempts,
            "successes": t.successes,
            "expert_success_rate": round(t.successes / t.attempts, 4),
            "mean_length": round(float(np.mean(t.lengths)), 2),
            "max_length": int(max(t.lengths)),
        }
        for task, t in tallies.items()
    }
    attempts = sum(t.attempts for t in tallies.values())
    successes = sum(t.successes for t in tallies.values())
    return {
        "expert_success_rate": round(successes / attempts, 4),
        "episodes": successes,
        "steps": int(sum(sum(t.lengths) for t in tallies.values())),
        "tasks": per_task,
    }


def check_layouts_distinct(heldout: dict[str, list[dict[str, Any]]], used: dict[str, list[np.ndarray]]) -> None:
    """Every demonstrated and held-out layout of a task must differ from every other one."""
    for task, layouts in used.items():
        rows = np.array([*layouts, *(h["layout"] for h in heldout[task])])
        if len(np.unique(rows, axis=0)) != len(rows):
            raise StageError(f"task {task}: two layouts coincide; change collect.seed")


def main(params: Params, tracking: TrackingParams, root: Path = Path(".")) -> dict[str, Any]:
    """Collect the demonstrations, then write the dataset and the metrics file."""
    demos_path, metrics_path = root / DEMOS, root / METRICS
    for stale in remove_stale_partials(demos_path):
        log.info("removed %s left by a killed run", stale)
    needed = params.demos_per_task + params.val_demos_per_task
    specs = {task: SimSpec(task, tuple(params.cameras), params.image_size) for task in params.tasks}
    tallies = {task: TaskTally() for task in params.tasks}
    used_layouts: dict[str, list[np.ndarray]] = {task: [] for task in params.tasks}
    make_job = lambda task, layout_id: Job(specs[task], layout_id, params.max_episode_steps, params.seed)  # noqa: E731

    with StageRun(STAGE, to_dict(params), tracking, root) as run, start_workers(params.workers) as pool:
        started = time.perf_counter()
        facts = list(pool.map(probe_task, specs.values(), [params.seed] * len(specs),
                              [params.heldout_layouts_per_task] * len(specs)))
        rates = {f.control_hz for f in facts}
        if len(rates) != 1:
            raise StageError(f"the tasks {params.tasks} run at different control rates {sorted(rates)} (Hz)")
        heldout = {f.task: f.heldout for f in facts}
        meta = dataset_meta(params, heldout, rate_hz=rates.pop())
        with DemoWriter(demos_path, meta) as writer, progress(total=needed * len(params.tasks), desc="demos") as bar:
            for attempt in collect_attempts(pool, params.tasks, needed, params.max_attempts_per_task, make_job,
                                            tallies):
                attempts_so_far = sum(t.attempts for t in tallies.values())
                bar.set_postfix(task=attempt.job.task, attempts=attempts_so_far, refresh=False)
                if attempt.episode is None:
                    log.info("expert failed on %s layout %d", attempt.job.task, attempt.job.layout_id)
                    continue
                split = "train" if tallies[attempt.job.task].successes <= params.demos_per_task else "val"
                writer.add(dataclasses.replace(attempt.episode, split=split))
                used_layouts[attempt.job.task].append(attempt.episode.layout)
                bar.update()
            short = {t: x.successes for t, x in tallies.items() if x.successes < needed}
            if short:  # raising inside the writer's block deletes the partial file
                raise StageError(
                    f"the expert reached fewer than {needed} successes within {params.max_attempts_per_task} "
                    f"attempts for {short}. Next step: raise collect.max_attempts_per_task or drop the task"
                )
            check_layouts_distinct(heldout, used_layouts)
        wall = time.perf_counter() - started
        metrics = summarize(params, tallies)
        write_json(metrics_path, metrics)
        run.log_metrics(
            {
                "expert_success_rate": metrics["expert_success_rate"],
                "episodes": metrics["episodes"],
                "steps": metrics["steps"],
                "wall_seconds": wall,
                "frames_per_second": metrics["steps"] / wall,
                **{f"expert_success_rate.{t}": m["expert_success_rate"] for t, m in metrics["tasks"].items()},
            }
        )
        run.log_artifact(metrics_path)
    log.info(
        "collected %d episodes, %d steps in %.1f s (%.1f frames/s); expert success %.1f%%",
        metrics["episodes"], metrics["steps"], wall, metrics["steps"] / wall, 100 * metrics["expert_success_rate"],
    )
    return metrics


if __name__ == "__main__":
    run_stage(STAGE, Params, main)
