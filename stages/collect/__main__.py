"""Run the `collect` stage: `python -m stages.collect [--params params.yaml]`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from common.atomic import write_json
from common.cli import StageError, run_stage
from common.collection import CollectionError, collect_demos
from common.config import to_dict
from common.provenance import code_fingerprint
from common.tracking import StageRun, TrackingParams
from stages.collect import CODE, DEMOS, METRICS, STAGE, Params

log = logging.getLogger(__name__)


def main(params: Params, tracking: TrackingParams, root: Path = Path(".")) -> dict[str, Any]:
    """Collect the demonstrations, then write the dataset and the metrics file."""
    metrics_path = root / METRICS
    with StageRun(STAGE, to_dict(params), tracking, root) as run:
        try:
            metrics, wall = collect_demos(params, root / DEMOS, code_fingerprint(*CODE))
        except CollectionError as exc:
            raise StageError(f"collect: {exc}") from exc
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
