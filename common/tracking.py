"""MLflow tracking: one run per stage, named after its DVC stage, with params, git commit and metrics.

mlflow is imported lazily (it costs seconds at start-up), and only when tracking is enabled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping

from common.config import Problem
from common.cpu import kernel_settings
from common.lineage import ARTIFACT, DVC_STAGE_ENV, STATUS_TAG, Declared, Record, declared
from common.provenance import PROJECT_ROOT, git_commit

log = logging.getLogger(__name__)

# Set by the study flow so that each stage's run becomes a child of one study run.
PARENT_RUN_ENV = "LASD_PARENT_RUN_ID"
_MAX_PARAM_LEN = 6000  # MLflow's limit on a parameter value
# Which process owns a RUNNING run: a later run of the same stage ends it as KILLED once that process is gone.
HOST_TAG, PID_TAG = "process.host", "process.pid"


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


def stage_address(stage: str, item: str | None = None) -> str:
    """The DVC address of the running stage: `stage`, or `stage@item` for a matrix item.

    Without an explicit item, DVC's own DVC_STAGE variable names it when DVC runs the command (only if it is
    this stage's: a stray value from an outer process is ignored).
    """
    if item:
        return f"{stage}@{item}"
    running = os.environ.get(DVC_STAGE_ENV, "")
    return running if running == stage or running.startswith(f"{stage}@") else stage


class StageRun:
    """Context manager for one stage's MLflow run; every method is a no-op when tracking is off.

    The run is named after the stage's DVC address (`finetune@la_tok-0` for a matrix item) and tagged with it
    (`dvc.stage`), the stage folder (`dvc.stage.base`), the git commit, what chose its CPU kernels (`cpu.model`,
    `cpu.capability`, `cpu.pinned`, `cpu.env.*`: common/cpu.py) and, under the study flow, its parent run.
    Its lineage (common/lineage.py): DVC's md5 of each input its dvc.yaml entry declares, taken when the run opens,
    and of each output, taken when it ends without error, as tags (`lineage.dep.<path>`, `lineage.out.<path>`)
    and the artifact lineage.json; its `cache: false` outputs (metrics, plots) are logged as artifacts.
    """

    def __init__(self, stage: str, params: Mapping[str, Any], tracking: TrackingParams, root: Path = PROJECT_ROOT,
                 item: str | None = None):
        self.stage = stage
        self.address = stage_address(stage, item)
        self.params = params
        self.tracking = tracking
        self.root = Path(root)
        self.run_id: str | None = None
        self._client: Any = None
        self._sigterm: tuple[Any, ...] = ()  # (the SIGTERM handler to restore,) while this run's is installed
        self.lineage: Record | str = "not taken"  # the stage's lineage, or why it has none

    def __enter__(self) -> "StageRun":
        if not self.tracking.enabled:
            return self
        import mlflow  # lazy: seconds of import time

        before = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(resolve_tracking_uri(self.tracking, self.root))
        # MLflow also exports the URI to the environment; undo that so this run's store does not silently become
        # the store of every later run resolved in this process (or its children) under other params.
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before
        self._client = mlflow.MlflowClient()
        experiment_id = experiment_of(self._client, self.tracking, self.root)
        tags = {"git.commit": git_commit(self.root), **kernel_settings()}
        if os.environ.get(PARENT_RUN_ENV):
            tags["mlflow.parentRunId"] = os.environ[PARENT_RUN_ENV]
        stage = declared(self.root, self.address)
        if isinstance(stage, Declared):
            self.address = stage.address  # `evaluate_reference`, not `evaluate`: the stage DVC runs
            self.lineage = Record.start(self.root, stage)
        else:
            self.lineage = stage
            log.warning("%s: no lineage recorded in MLflow: %s", self.address, stage)
        tags.update({"dvc.stage": self.address, "dvc.stage.base": self.stage.split("@")[0]})
        end_abandoned_runs(self._client, experiment_id, self.address)
        tags.update({HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())})
        run = self._client.create_run(experiment_id, run_name=self.address, tags=tags)
        self.run_id = run.info.run_id
        self._log_params(flatten(self.params))
        log.info("MLflow run %s (%s) at %s", self.run_id, self.address, resolve_tracking_uri(self.tracking, self.root))
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
            self._sigterm = (signal.signal(signal.SIGTERM, self._on_sigterm) or signal.SIG_DFL,)
        return self

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        """End the run as KILLED, then die of the signal as the process would have."""
        self._client.set_terminated(self.run_id, status="KILLED")
        self._client = None
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        log_batches(self._client, self.run_id, "params", [Param(k, v) for k, v in sorted(params.items())])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log many metrics in one batched call (per-call logging costs ~3 ms each on sqlite)."""
        if self._client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        log_batches(self._client, self.run_id, "metrics", [Metric(k, float(v), now, step)
                                                            for k, v in sorted(metrics.items())])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Attach tags (e.g. content hashes of outputs) to the run."""
        if self._client is not None:
            set_tags(self._client, self.run_id, tags)

    def log_artifact(self, path: Path) -> None:
        """Copy a (small) file into the run's artifacts."""
        if self._client is not None:
            self._client.log_artifact(self.run_id, str(path))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._sigterm:
            signal.signal(signal.SIGTERM, self._sigterm[0])
            self._sigterm = ()
        if self._client is not None:
            status = ("FINISHED" if exc_type is None else
                      "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")  # Ctrl-C: SIGINT
            try:
                if exc_type is None:
                    self._record_lineage()
            except BaseException:  # the stage fails with it, and so does its run (never left RUNNING)
                status = "FAILED"
                raise
            finally:
                self._client.set_terminated(self.run_id, status=status)

    def _record_lineage(self) -> None:
        """Hash the outputs, tag the run with the lineage, log lineage.json and the small outputs."""
        if not isinstance(self.lineage, Record):
            set_tags(self._client, self.run_id, {STATUS_TAG: f"none: {self.lineage}"})
            return
        self.lineage.finish(self.root)
        digest = params_digest(self.lineage.stage.params)
        set_tags(self._client, self.run_id, self.lineage.tags(digest))
        self._client.log_text(self.run_id, json.dumps(self.lineage.to_json(digest), indent=1, sort_keys=True),
                              ARTIFACT)
        for path in self.lineage.stage.small_outs:
            full = self.root / path
            if full.is_file():
                self._client.log_artifact(self.run_id, str(full))
            elif full.is_dir():
                self._client.log_artifacts(self.run_id, str(full), Path(path).name)


def end_abandoned_runs(client: Any, experiment_id: str, address: str) -> list[str]:
    """End as KILLED the RUNNING runs of this stage whose process on this host is gone (a SIGKILL, a lost
    machine's power); return their ids. Runs of live processes and of other hosts are left alone."""
    query = f"tags.`dvc.stage` = '{address}' and attributes.status = 'RUNNING'"
    ended = []
    for run in client.search_runs([experiment_id], query, max_results=1000):
        host, pid = run.data.tags.get(HOST_TAG), run.data.tags.get(PID_TAG)
        if host == socket.gethostname() and pid and pid.isdigit() and not _alive(int(pid)):
            client.set_terminated(run.info.run_id, status="KILLED")
            ended.append(run.info.run_id)
            log.warning("MLflow run %s (%s) was left RUNNING by process %s, which is gone: marked KILLED",
                        run.info.run_id, address, pid)
    return ended


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def params_digest(locked_params: Mapping[str, Any]) -> str:
    """A short, stable digest of a stage's locked params ({params file: {key: value}})."""
    return hashlib.md5(json.dumps(locked_params, sort_keys=True).encode()).hexdigest()


_BATCH_LIMITS = {"params": 100, "metrics": 1000, "tags": 100}  # MLflow's most entities of a kind per log_batch


def log_batches(client: Any, run_id: str, kind: str, items: list[Any]) -> None:
    """Log params, metrics or tags (MLflow entities) in as few `log_batch` calls as MLflow accepts (one call per
    entity costs a sqlite transaction each)."""
    size = _BATCH_LIMITS[kind]
    for start in range(0, len(items), size):
        client.log_batch(run_id, **{kind: items[start : start + size]})


def set_tags(client: Any, run_id: str, tags: Mapping[str, str]) -> None:
    """Tag a run in batched calls."""
    from mlflow.entities import RunTag

    log_batches(client, run_id, "tags", [RunTag(k, str(v)) for k, v in tags.items()])


def experiment_of(client: Any, tracking: TrackingParams, root: Path) -> str:
    """The experiment's id, created if new: in the default store (sqlite in `root`) with its artifacts in
    `root`/mlruns/<experiment>, not under whichever folder the process that created it was started in."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(tracking.experiment)
    if experiment is not None:
        return experiment.experiment_id
    default_store = not os.environ.get("MLFLOW_TRACKING_URI") and not tracking.uri
    location = str(Path(root).resolve() / "mlruns" / tracking.experiment) if default_store else None
    try:
        return client.create_experiment(tracking.experiment, artifact_location=location)
    except MlflowException:  # a stage beside this one created it first
        return client.get_experiment_by_name(tracking.experiment).experiment_id
