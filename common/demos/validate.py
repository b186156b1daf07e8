"""Check a demonstration file end to end before anything trains on it.

Every problem is reported with the demo and field it concerns; reading every dataset in full also catches files
whose header survived a truncation but whose data did not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from common.demos import schema as S
from common.demos.reader import DemoReader
from common.demos.splits import DEFAULT_VAL_FRACTION

MAX_REPORTED = 25


def validate_file(path: Path, val_fraction: float = DEFAULT_VAL_FRACTION) -> S.DatasetMeta:
    """Validate every demo of the file at `path`; return its metadata or raise DatasetError listing problems."""
    with DemoReader(path, val_fraction) as reader:
        check(reader)
        return reader.meta


def check(reader: DemoReader) -> None:
    """Raise a DatasetError listing every problem of the reader's file, one per line; return if there are none."""
    problems = file_problems(reader)
    if problems:
        shown = "\n  - ".join(problems[:MAX_REPORTED])
        raise S.DatasetError(
            f"{reader.path}: {len(problems)}{'+' if len(problems) >= MAX_REPORTED else ''} problem(s):\n  - {shown}\n"
            f"Next step: {reader.format.next_step}"
        )


def file_problems(reader: DemoReader) -> list[str]:
    """Every problem of the reader's file, each naming its demo and field (at most MAX_REPORTED)."""
    problems: list[str] = []
    if not reader.names:
        problems.append(f"group '{S.DATA}': holds no demo_<i> groups")
    elif not reader.splits["train"]:
        problems.append("no demo in the 'train' split; training needs at least one")
    for name in reader.names:
        problems.extend(f"{name}/{p}" for p in _demo_problems(reader, name))
        if len(problems) >= MAX_REPORTED:
            break
    return problems


def nonfinite(key: str, values: np.ndarray) -> str | None:
    """A problem line locating the first NaN/inf of a per-step array, or None when all values are finite."""
    bad = ~np.isfinite(values.reshape(len(values), -1))  # (T, D)
    if not bad.any():
        return None
    step, dim = (int(i) for i in np.argwhere(bad)[0])
    value = values.reshape(len(values), -1)[step, dim]
    return f"{key}: {int(bad.sum())} NaN/inf value(s), the first ({value}) at step {step}, dimension {dim}"


def _read(group: h5py.Group, key: str) -> tuple[np.ndarray | None, str | None]:
    """Read a dataset in full; return (array, None) or (None, what went wrong)."""
    if key not in group:
        return None, f"{key}: missing"
    try:
        return group[key][()], None
    except (OSError, RuntimeError, KeyError) as exc:
        return None, f"{key}: unreadable ({exc}); the file is truncated or corrupt"


def _demo_problems(reader: DemoReader, name: str) -> Iterator[str]:
    meta = reader.meta
    try:
        demo = reader.group(name)
        obs = demo[S.OBS] if S.OBS in demo else None
    except (OSError, RuntimeError, KeyError) as exc:
        yield f"unreadable ({exc}); the file is truncated or corrupt"
        return
    actions, error = _read(demo, S.ACTIONS)
    if error:
        yield error
        return
    if not np.issubdtype(actions.dtype, np.floating):
        yield f"{S.ACTIONS}: dtype {actions.dtype}, expected float32"
    if actions.ndim != 2 or actions.shape[1] != meta.action_space.dim or actions.shape[0] == 0:
        yield f"{S.ACTIONS}: shape {actions.shape}, expected (T>0, {meta.action_space.dim})"
        return
    length = actions.shape[0]
    if np.issubdtype(actions.dtype, np.floating) and (problem := nonfinite(S.ACTIONS, actions)):
        yield problem
    declared = demo.attrs.get(S.ATTR_NUM_SAMPLES)
    if declared is not None and int(declared) != length:
        yield f"attrs/{S.ATTR_NUM_SAMPLES}: {int(declared)}, but {S.ACTIONS} has {length} steps"
    if not reader.instruction(name).strip():
        yield reader.format.missing_instruction
    yield from reader.format.problems(demo)
    if obs is None:
        yield f"{S.OBS}: missing"
        return
    height, width = meta.image_size
    for camera in meta.cameras:
        frames, error = _read(obs, camera + S.RGB_SUFFIX)
        where = f"{S.OBS}/{camera}{S.RGB_SUFFIX}"
        if error:
            yield f"{S.OBS}/{error}"
        elif frames.dtype != np.uint8:
            yield f"{where}: dtype {frames.dtype}, expected uint8"
        elif frames.shape != (length, height, width, 3):
            yield f"{where}: shape {frames.shape}, expected {(length, height, width, 3)} (T from {S.ACTIONS})"
    for key in meta.proprio_keys:
        values, error = _read(obs, key)
        if error:
            yield f"{S.OBS}/{error}"
        elif not np.issubdtype(values.dtype, np.floating):
            yield f"{S.OBS}/{key}: dtype {values.dtype}, expected float32"
        elif values.ndim == 0 or values.shape[0] != length:
            yield f"{S.OBS}/{key}: {values.shape[0] if values.ndim else 0} steps, but {S.ACTIONS} has {length}"
        elif problem := nonfinite(f"{S.OBS}/{key}", values):
            yield problem
    for key in reader.format.step_keys(demo):
        values, error = _read(demo, key)
        if error:
            yield error
        elif values.shape != (length,):
            yield f"{key}: shape {values.shape}, expected ({length},)"


def training_demos(path: Path, cameras: tuple[str, ...], field: str, next_step: str, *,
                   val_fraction: float) -> tuple[S.DatasetMeta, S.Stats, S.Stats]:
    """A demo file checked for training on `cameras` (the params key `field` names them): its metadata and the
    action and proprio statistics that normalise it."""
    meta = validate_file(path, val_fraction)
    unknown = [c for c in cameras if c not in meta.cameras]
    if unknown:
        raise S.DatasetError(f"{field} = {list(cameras)}: {unknown} not in {path}'s cameras {list(meta.cameras)}; "
                             f"{next_step}")
    with DemoReader(path, val_fraction) as reader:
        return meta, reader.stats("actions"), reader.stats("proprio")
