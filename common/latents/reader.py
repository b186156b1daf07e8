"""Read and validate latent sidecars: `LatentFile(path, kind)`, `validate_sidecar(path, kind, lengths)`."""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping

import numpy as np

from common.demos import DatasetError
from common.demos.reader import open_h5
from common.demos.schema import demo_sort_key
from common.latents import schema as S
from common.latents.writer import episode_problems

MAX_REPORTED = 25


class LatentFile:
    """One sidecar opened read-only; `.meta` (dict), `.names()`, `.episode(name)`. Use as a context manager."""

    def __init__(self, path: Path, kind: str):
        self.path = Path(path)
        self.kind = S.kind_of(kind)
        self._file = open_h5(self.path)
        try:
            self.meta = self._read_meta()
        except BaseException:
            self._file.close()
            raise

    def _read_meta(self) -> dict[str, Any]:
        raw = self._file.attrs.get(S.ATTR_META)
        if raw is None or S.DATA not in self._file:
            raise DatasetError(f"{self.path}: no '{S.ATTR_META}' attribute or '{S.DATA}' group; not a latent "
                               "sidecar. Next step: run `dvc repro extract`")
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{self.path}: attribute '{S.ATTR_META}' is not JSON ({exc})") from exc
        if meta.get("kind") != self.kind.name:
            raise DatasetError(f"{self.path}: meta.kind = {meta.get('kind')!r}, expected {self.kind.name!r}; "
                               "is this the right sidecar?")
        missing = [key for key in self.kind.required_meta if key not in meta]
        if missing:
            raise DatasetError(f"{self.path}: meta lacks {missing}. Next step: rerun `dvc repro extract`")
        return meta

    def names(self) -> list[str]:
        """Demo names in demo order."""
        return sorted(self._file[S.DATA], key=demo_sort_key)

    def episode(self, name: str) -> dict[str, np.ndarray]:
        """Every field of one demo, read in full."""
        data = self._file[S.DATA]
        if name not in data:
            raise DatasetError(f"{self.path}: no demo {name!r} (it has {len(data)} demos). Next step: rerun "
                               "`dvc repro extract` after the dataset changed")
        out = {}
        for field in self.kind.fields:
            if field.name not in data[name]:
                raise DatasetError(f"{self.path}: {name}/{field.name} is missing")
            try:
                out[field.name] = data[name][field.name][()]
            except (OSError, RuntimeError) as exc:
                raise DatasetError(f"{self.path}: {name}/{field.name} is unreadable ({exc}); the file is truncated "
                                   "or corrupt. Next step: delete it and rerun `dvc repro extract`") from exc
        return out

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> "LatentFile":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def validate_sidecar(path: Path, kind: str, lengths: Mapping[str, int]) -> dict[str, Any]:
    """Check a sidecar against the demos' lengths (every demo present, no extra one, shapes, dtypes, id ranges).

    Returns its meta; raises DatasetError naming the file, the demo and the field of every problem found.
    """
    with LatentFile(path, kind) as latents:
        names = latents.names()
        problems = [f"{name}: in the dataset but not in the sidecar" for name in lengths if name not in names]
        problems += [f"{name}: in the sidecar but not in the dataset" for name in names if name not in lengths]
        for name in (n for n in names if n in lengths):
            try:
                arrays = latents.episode(name)
            except DatasetError as exc:
                problems.append(str(exc))
                continue
            problems += episode_problems(latents.kind, latents.meta, name, lengths[name], arrays)
            if len(problems) >= MAX_REPORTED:
                break
        if problems:
            raise DatasetError(f"{path}: {len(problems)} problem(s):\n  - " + "\n  - ".join(problems[:MAX_REPORTED])
                               + "\nNext step: delete the file and rerun `dvc repro extract`")
        return latents.meta
