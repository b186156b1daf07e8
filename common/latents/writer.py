"""Write a latent sidecar atomically and byte-reproducibly (no HDF5 timestamps, demos in the order given)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import h5py
import numpy as np

from common.atomic import atomic_path
from common.demos import DatasetError
from common.demos.writer import _dataset, _group
from common.latents import schema as S


def episode_problems(kind: S.Kind, meta: Mapping[str, Any], name: str, length: int,
                     arrays: Mapping[str, np.ndarray]) -> list[str]:
    """What is wrong with one demo's latents: missing fields, dtypes, shapes (T from the demo), ids out of range."""
    problems = []
    for field in kind.fields:
        if field.name not in arrays:
            problems.append(f"{name}/{field.name}: missing")
            continue
        value = arrays[field.name]
        shape = S.expected_shape(field, length, meta)
        if value.dtype != field.dtype:
            problems.append(f"{name}/{field.name}: dtype {value.dtype}, expected {np.dtype(field.dtype)}")
        elif value.shape != shape:
            problems.append(f"{name}/{field.name}: shape {value.shape}, expected {shape} (T = the demo's length)")
        elif field.name == kind.ids and value.size and (value.min() < 0 or value.max() >= meta[kind.vocab_key]):
            problems.append(f"{name}/{field.name}: ids in [{value.min()}, {value.max()}], outside the vocabulary "
                            f"[0, {meta[kind.vocab_key]}) ({kind.vocab_key})")
        elif np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            problems.append(f"{name}/{field.name}: {int((~np.isfinite(value)).sum())} NaN/inf value(s)")
    return problems


def write_sidecar(path: Path, meta: Mapping[str, Any],
                  episodes: Iterable[tuple[str, int, Mapping[str, np.ndarray]]]) -> int:
    """Write (demo name, demo length, arrays) in order under `path`; every demo is validated first. Returns demos."""
    kind = S.kind_of(str(meta["kind"]))
    missing = [key for key in kind.required_meta if key not in meta]
    if missing:
        raise ValueError(f"{path}: sidecar meta lacks {missing}")
    count = 0
    with atomic_path(Path(path)) as tmp, h5py.File(tmp, "w", track_order=False) as handle:
        data = _group(handle, S.DATA)
        for name, length, arrays in episodes:
            problems = episode_problems(kind, meta, name, length, arrays)
            if problems:
                raise DatasetError(f"{path}: refusing to write invalid latents:\n  - " + "\n  - ".join(problems))
            demo = _group(data, name)
            for field in kind.fields:
                _dataset(demo, field.name, np.ascontiguousarray(arrays[field.name]), compress=False)
            count += 1
        handle.attrs[S.ATTR_META] = json.dumps(dict(meta), sort_keys=True)
    return count
