"""The study's stage graph as DVC sees it (dvc.yaml + dvc.lock), read through DVC's Python API.

dvc.yaml stays the one definition of the DAG: the Prefect flow and the audit both read it from here, never by
parsing the YAML themselves, so `matrix:` and `foreach:` items (`finetune@la_tok-0`) come out exactly as DVC
names them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any, Callable


class GraphError(RuntimeError):
    """dvc.yaml or dvc.lock cannot be read as a stage graph; the message names the file and the fix."""


@dataclasses.dataclass(frozen=True)
class LockedPath:
    """A file or folder a stage reads or writes, with the md5 dvc.lock recorded for it (None: never run)."""

    path: str  # relative to the repository root, as written in dvc.yaml
    md5: str | None  # DVC's md5; folders end in `.dir`
    cached: bool  # False for `cache: false` outputs (metrics kept in git)


@dataclasses.dataclass(frozen=True)
class StageInfo:
    """One runnable stage (one matrix item for a matrix stage)."""

    name: str  # DVC's address: `collect`, `finetune@la_tok-0`
    cmd: str
    upstream: tuple[str, ...]  # stages whose outputs this one reads
    deps: tuple[LockedPath, ...]  # files and folders read (code and data), params excluded
    outs: tuple[LockedPath, ...]
    locked_params: dict[str, Any]  # {params file: {key: value}} as dvc.lock recorded them ({} if never run)
    current_params: dict[str, Any]  # the same keys as the params files hold them now

    @property
    def locked(self) -> bool:
        """Whether dvc.lock has an entry for this stage (it has been run)."""
        return any(o.md5 for o in self.outs) or bool(self.locked_params)


def _paths(items: Any) -> tuple[LockedPath, ...]:
    return tuple(LockedPath(path=item.def_path, md5=item.hash_info.value if item.hash_info else None,
                            cached=bool(getattr(item, "use_cache", True)))
                 for item in items)


def _address(stage: Any, root: str) -> str:
    """DVC's address of a stage relative to the repository root (DVC's own is relative to the working folder)."""
    dvcfile = os.path.relpath(stage.path, root)
    return stage.name if dvcfile == "dvc.yaml" else f"{dvcfile}:{stage.name}"


def read_stages(root: Path) -> list[StageInfo]:
    """All command stages of the DVC project at `root`, upstream before downstream (ties by name)."""
    import networkx as nx
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        # Hold DVC's repository lock (waiting for it, as `dvc --wait-for-lock` does) so that a concurrent
        # `dvc repro` never shows a half-written dvc.lock.
        with Repo(str(root), _wait_for_lock=True) as repo, repo.lock:
            graph = repo.index.graph  # edges point from a stage to the stages it depends on
            address = {stage: _address(stage, repo.root_dir) for stage in graph.nodes}
            order = nx.lexicographical_topological_sort(graph.reverse(copy=True), key=address.__getitem__)
            loaded: dict[str, Any] = {}  # params files, each parsed once (not once per stage: 0.1 s a time)
            return [_info(stage, address, graph, loaded) for stage in order if getattr(stage, "cmd", None)]
    except DvcException as exc:
        raise GraphError(f"{root}: DVC cannot read the stage graph ({exc}); fix dvc.yaml/dvc.lock "
                         "(`dvc status` shows the same error)") from exc


def _info(stage: Any, address: dict[Any, str], graph: Any, loaded: dict[str, Any]) -> StageInfo:
    from dvc.dependency.param import ParamsDependency

    params = [d for d in stage.deps if isinstance(d, ParamsDependency)]
    return StageInfo(
        name=address[stage],
        cmd=stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd),
        upstream=tuple(sorted(address[s] for s in graph.successors(stage) if getattr(s, "cmd", None))),
        deps=_paths(d for d in stage.deps if not isinstance(d, ParamsDependency)),
        outs=_paths(stage.outs),
        locked_params={d.def_path: d.hash_info.value for d in params if d.hash_info},
        current_params={d.def_path: _current_params(d, loaded) for d in params},
    )


def _current_params(dep: Any, loaded: dict[str, Any]) -> dict[str, Any]:
    """What `ParamsDependency.read_params()` returns ({dotted key: value}, or the whole file when the stage lists
    no keys; {} for a missing file), with each file parsed once into `loaded`."""
    import dpath
    from dvc.dependency.param import BadParamFileError, MissingParamsFile
    from dvc.exceptions import DvcException
    from dvc.utils.serialize import load_path

    try:
        dep.validate_filepath()
    except MissingParamsFile:
        return {}
    if dep.fs_path not in loaded:
        try:
            loaded[dep.fs_path] = load_path(dep.fs_path, dep.repo.fs)
        except DvcException as exc:
            raise BadParamFileError(f"Unable to read parameters from '{dep}'") from exc
    config = loaded[dep.fs_path]
    if not dep.params:
        return dict(config)
    values = {}
    for key in dict.fromkeys(dep.params):
        try:
            values[key] = dpath.get(config, key, separator=".")
        except KeyError:
            continue
    return values


def with_upstream(stages: list[StageInfo], targets: list[str]) -> list[StageInfo]:
    """The named stages and everything they depend on, in graph order; unknown names raise with the choices."""
    by_name = {s.name: s for s in stages}
    unknown = [t for t in targets if t not in by_name]
    if unknown:
        raise GraphError(f"dvc.yaml has no stage(s) {unknown}; stages: {sorted(by_name)}")
    wanted: set[str] = set()
    todo = list(targets)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(by_name[name].upstream)
    return [s for s in stages if s.name in wanted]


def dvc_md5(path: Path, ignored: Callable[[Path], bool] = lambda p: False) -> str:
    """DVC's md5 of a file or folder as it is on disk now, computed afresh (DVC's own cache of hashes is not used).

    A file's is the md5 of its bytes; a folder's is the md5 of DVC's JSON listing of its files' md5s, plus
    `.dir`, which is what dvc.lock records for folder outputs. `ignored` leaves out what .dvcignore does
    (see `dvcignore`).
    """
    path = Path(path)
    if path.is_file():
        return _file_md5(path)
    if not path.is_dir():
        raise FileNotFoundError(path)
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.meta import Meta
    from dvc_data.hashfile.tree import Tree

    tree = Tree()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not ignored(p)):
        tree.add(file.relative_to(path).parts, Meta(size=file.stat().st_size), HashInfo("md5", _file_md5(file)))
    tree.digest()
    return tree.hash_info.value


def dvcignore(root: Path) -> Callable[[Path], bool]:
    """A predicate: whether DVC's .dvcignore rules at `root` leave a path out of folder hashes."""
    from dvc.repo import Repo

    repo = Repo(str(root))
    return lambda path: bool(repo.dvcignore.is_ignored(repo.fs, str(Path(path).resolve())))


def _file_md5(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()
