"""A stage's own lineage record: DVC's md5 of every input and output its dvc.yaml entry declares.

The stage hashes its inputs when its MLflow run opens (what it read) and its outputs when the run ends
successfully (what it wrote), with the same md5 dvc.lock records (`common.dvc_graph.dvc_md5`), so that a plain
`dvc repro` leaves an auditable record in MLflow without the study flow (which adds dvc.lock's own entry later).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from common.dvc_graph import dvc_md5

log = logging.getLogger(__name__)

DEP_TAG, OUT_TAG, PARAMS_TAG = "lineage.dep.", "lineage.out.", "lineage.params"
STATUS_TAG = "lineage.status"  # `recorded`, or why the stage has no record
ARTIFACT = "lineage.json"
MISSING = "missing"  # the md5 of a declared path that is not on disk
DVC_STAGE_ENV = "DVC_STAGE"  # DVC sets it for every stage command: the stage's address, e.g. `finetune@la_tok-0`


@dataclasses.dataclass(frozen=True)
class Declared:
    """What dvc.yaml declares for one stage (one matrix item), read through DVC."""

    address: str  # DVC's address: `collect`, `finetune@la_tok-0`
    deps: tuple[str, ...]  # files and folders read, relative to the root (params files excluded)
    outs: tuple[str, ...]  # files and folders written
    small_outs: tuple[str, ...]  # `cache: false` outputs (metrics, plots, the report): kept in git, small
    params: dict[str, Any]  # {params file: {key: value}}, as dvc.lock records them once the stage has run
    ignored: Callable[[Path], bool]  # .dvcignore, as DVC applies it to folder hashes

    def hash_paths(self, root: Path, paths: tuple[str, ...]) -> dict[str, str]:
        """DVC's md5 of each path as it is on disk now (MISSING when absent)."""
        return {p: dvc_md5(root / p, self.ignored) if (root / p).exists() else MISSING for p in paths}


def declared(root: Path, address: str) -> Declared | str:
    """The dvc.yaml entry of the stage at `address` in the DVC project at `root`, or why there is none.

    DVC names a stage command's stage in DVC_STAGE; when `address` (what the stage's code calls itself) is not a
    stage of dvc.yaml, DVC_STAGE is used if that stage runs the same module (`python -m stages.evaluate ...` is
    both `evaluate@<item>` and `evaluate_reference`).
    """
    from dvc.dependency.param import ParamsDependency
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        repo = Repo(str(root))  # no repository lock: `dvc repro` holds it around, never during, a stage's command
    except DvcException as exc:
        return f"no DVC project at {root} ({exc})"
    stage = _load(repo, address)
    running = os.environ.get(DVC_STAGE_ENV, "")
    if stage is None and running:
        candidate = _load(repo, running)
        module = f"stages.{address.split('@')[0]}"
        cmd = getattr(candidate, "cmd", "")
        if candidate is not None and module in (cmd if isinstance(cmd, str) else " ".join(cmd)).split():
            stage = candidate
    if stage is None:
        return f"dvc.yaml at {root} has no stage {address!r}"
    params = [d for d in stage.deps if isinstance(d, ParamsDependency)]
    try:
        values = {d.def_path: d.read_params() for d in params}
    except DvcException as exc:
        return f"the params of {stage.name} in dvc.yaml at {root} cannot be read ({exc})"
    return Declared(
        address=stage.name,  # the root dvc.yaml's stage (`addressing` is relative to the working folder)
        deps=tuple(d.def_path for d in stage.deps if not isinstance(d, ParamsDependency)),
        outs=tuple(o.def_path for o in stage.outs),
        small_outs=tuple(o.def_path for o in stage.outs if not o.use_cache),
        params=values,
        ignored=lambda path: bool(repo.dvcignore.is_ignored(repo.fs, str(Path(path).resolve()))),
    )


def _load(repo: Any, address: str) -> Any:
    """The stage at a dvc.yaml address (`name` or `name@item`), or None."""
    from dvc.exceptions import DvcException

    try:
        return repo.stage.load_one(os.path.join(repo.root_dir, "dvc.yaml"), address)  # not the working folder's
    except (DvcException, KeyError):
        return None


@dataclasses.dataclass
class Record:
    """A stage's lineage as it is taken: inputs at the start, outputs at the end."""

    stage: Declared
    deps: dict[str, str]
    outs: dict[str, str] = dataclasses.field(default_factory=dict)
    hash_seconds: float = 0.0

    @classmethod
    def start(cls, root: Path, stage: Declared) -> "Record":
        """Hash the inputs now, before the stage's work reads them."""
        started = time.perf_counter()
        deps = stage.hash_paths(root, stage.deps)
        return cls(stage, deps, hash_seconds=time.perf_counter() - started)

    def finish(self, root: Path) -> None:
        """Hash the outputs now, after the stage wrote them."""
        started = time.perf_counter()
        self.outs = self.stage.hash_paths(root, self.stage.outs)
        self.hash_seconds += time.perf_counter() - started
        log.info("%s: lineage of %d inputs and %d outputs hashed in %.2f s", self.stage.address, len(self.deps),
                 len(self.outs), self.hash_seconds)

    def tags(self, params_digest: str) -> dict[str, str]:
        """The record as run tags: one per input and output path, holding DVC's md5."""
        tags = {f"{DEP_TAG}{p}": md5 for p, md5 in self.deps.items()}
        tags.update({f"{OUT_TAG}{p}": md5 for p, md5 in self.outs.items()})
        return {**tags, PARAMS_TAG: params_digest, STATUS_TAG: "recorded"}

    def to_json(self, params_digest: str) -> dict[str, Any]:
        """The record as the run's lineage.json artifact."""
        return {"stage": self.stage.address, "deps": self.deps, "outs": self.outs, "params": self.stage.params,
                "params_digest": params_digest, "hash_seconds": round(self.hash_seconds, 3),
                "hashed": "deps when the run opened, outs when it ended; DVC's md5 (folders: `.dir`)"}


def recorded(tags: dict[str, str], prefix: str) -> dict[str, str]:
    """{path: md5} from a run's tags with the given prefix (DEP_TAG, OUT_TAG or tracking's dvc.lock ones)."""
    return {k[len(prefix):]: v for k, v in tags.items() if k.startswith(prefix)}
