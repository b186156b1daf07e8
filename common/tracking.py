"""MLflow tracking: one run per stage, named after its DVC stage, with params, git commit and metrics.

mlflow is imported lazily (it costs seconds at start-up), and only when tracking is enabled.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping

from common.config import Problem
from common.provenance import PROJECT_ROOT, git_commit

log = logging.getLogger(__name__)

# Set by the study flow so that each stage's run becomes a child of one study run.
PARENT_RUN_ENV = "LASD_PARENT_RUN_ID"
_MAX_PARAM_LEN = 6000  # MLflow's limit on a parameter value


@dataclasses.dataclass(frozen=True)
class TrackingParams:
    """The `tracking` section of params.yaml."""

    enabled: bool
    uri: str  # empty: sqlite:///<project root>/mlflow.db (absolute, so runs from temp dirs land there too)
    experiment: str

    def problems(self) -> list[Problem]:
        if not self.experiment:
            return [Problem("experiment", self.experiment, "must not be empty", "name the MLflow experiment")]
        return []


def resolve_tracking_uri(params: TrackingParams, root: Path = PROJECT_ROOT) -> str:
    """The tracking URI: MLFLOW_TRACKING_URI, else params.uri, else an absolute sqlite file in `root`."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if params.uri:
        return params.uri
    return f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested params to dotted keys with string values, as MLflow stores them."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            flat[name] = text[:_MAX_PARAM_LEN]
    return flat


class StageRun:
    """Context manager for one stage's MLflow run; every method is a no-op when tracking is off."""

    def __init__(self, stage: str, params: Mapping[str, Any], tracking: TrackingParams, root: Path = PROJECT_ROOT):
        self.stage = stage
        self.params = params
        self.tracking = tracking
        self.root = Path(root)
        self.run_id: str | None = None
        self._client: Any = None

    def __enter__(self) -> "StageRun":
        if not self.tracking.enabled:
            return self
        import mlflow  # lazy: seconds of import time

        mlflow.set_tracking_uri(resolve_tracking_uri(self.tracking, self.root))
        experiment = mlflow.set_experiment(self.tracking.experiment)
        tags = {"dvc.stage": self.stage, "git.commit": git_commit(self.root)}
        if os.environ.get(PARENT_RUN_ENV):
            tags["mlflow.parentRunId"] = os.environ[PARENT_RUN_ENV]
        self._client = mlflow.MlflowClient()
        run = self._client.create_run(experiment.experiment_id, run_name=self.stage, tags=tags)
        self.run_id = run.info.run_id
        self._log_params(flatten(self.params))
        log.info("MLflow run %s (%s) at %s", self.run_id, self.stage, resolve_tracking_uri(self.tracking, self.root))
        return self

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in sorted(params.items())]
        for start in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self._client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log many metrics in one batched call (per-call logging costs ~3 ms each on sqlite)."""
        if self._client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in sorted(metrics.items())]
        for start in range(0, len(items), 1000):
            self._client.log_batch(self.run_id, metrics=items[start : start + 1000])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Attach tags (e.g. content hashes of outputs) to the run."""
        if self._client is None:
            return
        for key, value in tags.items():
            self._client.set_tag(self.run_id, key, value)

    def log_artifact(self, path: Path) -> None:
        """Copy a (small) file into the run's artifacts."""
        if self._client is not None:
            self._client.log_artifact(self.run_id, str(path))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            self._client.set_terminated(self.run_id, status="FINISHED" if exc_type is None else "FAILED")
