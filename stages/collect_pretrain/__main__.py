"""Run the `collect_pretrain` stage: `python -m stages.collect_pretrain [--params params.yaml]`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from common.atomic import write_json
from common.cli import StageError, params_path, run_stage
from common.collection import CollectionError, CollectParams, collect_demos
from common.config import ParamsError, load_section, to_dict
from common.provenance import code_fingerprint
from common.tracking import StageRun, TrackingParams
from stages.collect_pretrain import CODE, DEMOS, METRICS, STAGE, STUDY_SECTION, Params, collection

log = logging.getLogger(__name__)


def main(params: Params, study: CollectParams, tracking: TrackingParams, root: Path = Path(".")) -> dict[str, Any]:
    """Collect demonstrations of every simulator task outside the study, then write the dataset and metrics file."""
    chosen, problems = collection(params, study)
    if problems:
        raise ParamsError(f"{STAGE} (with {STUDY_SECTION})", problems)
    overlap = set(chosen.tasks) & set(study.tasks)
    assert not overlap, f"study tasks {sorted(overlap)} in the pretraining set"
    log.info("%d pretraining tasks (the study's %d and %d excluded ones left out)", len(chosen.tasks),
             len(study.tasks), len(params.exclude))
    metrics_path = root / METRICS
    with StageRun(STAGE, {**to_dict(params), "tasks": chosen.tasks}, tracking, root) as run:
        try:
            metrics, wall = collect_demos(chosen, root / DEMOS, code_fingerprint(*CODE), require_all=False)
        except CollectionError as exc:
            raise StageError(f"{STAGE}: {exc}") from exc
        write_json(metrics_path, metrics)
        run.log_metrics({"expert_success_rate": metrics["expert_success_rate"], "episodes": metrics["episodes"],
                         "steps": metrics["steps"], "short_tasks": len(metrics["short_tasks"]),
                         "wall_seconds": wall, "frames_per_second": metrics["steps"] / wall})
        run.log_artifact(metrics_path)
    log.info("collected %d episodes of %d tasks, %d steps in %.1f s (%.1f frames/s); %d tasks short: %s",
             metrics["episodes"], len(chosen.tasks), metrics["steps"], wall, metrics["steps"] / wall,
             len(metrics["short_tasks"]), metrics["short_tasks"])
    return metrics


def _cli_main(params: Params, tracking: TrackingParams, root: Path) -> None:
    main(params, load_section(params_path(), STUDY_SECTION, CollectParams), tracking, root)


if __name__ == "__main__":
    run_stage(STAGE, Params, _cli_main)
