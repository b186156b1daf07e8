"""Read demonstration files in any registered format (formats.py) through one reader."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Iterator

import h5py
import numpy as np

from common.demos import schema as S
from common.demos.formats import DemoFormat, format_of
from common.demos.splits import DEFAULT_VAL_FRACTION, splits_of


def open_h5(path: Path) -> h5py.File:
    """Open an HDF5 file read-only, turning a missing or truncated file into a DatasetError."""
    path = Path(path)
    if not path.is_file():
        raise S.DatasetError(f"{path}: no such file. Next step: run `dvc repro collect` (or pass the right path)")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise S.DatasetError(
            f"{path}: cannot be opened as HDF5 ({exc}); the file is truncated or corrupt. "
            "Next step: delete it and rerun `dvc repro collect`"
        ) from exc


class DemoReader:
    """Random access to the demos of one file, whatever its format. Use as a context manager, or call close().

    `val_fraction` is the share of demos held out for validation in a file that declares no splits (splits.py).
    """

    def __init__(self, path: Path, val_fraction: float = DEFAULT_VAL_FRACTION):
        self.path = Path(path)
        self._file = open_h5(self.path)
        try:
            if S.DATA not in self._file:
                raise S.DatasetError(f"{self.path}: no '{S.DATA}' group; this is not a demonstration file")
            self.format: DemoFormat = format_of(self._file, self.path)
            self.names = sorted(
                (n for n in self._file[S.DATA] if n.startswith(S.DEMO_PREFIX)), key=S.demo_sort_key
            )
            self.meta = self.format.meta(self._file, self.path, self.names)
            self._splits = splits_of(self._file[S.DATA], self.names, val_fraction, self.path)
        except BaseException:
            self._file.close()
            raise

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[S.Episode]:
        for name in self.names:
            yield self.episode(name)

    @property
    def splits(self) -> dict[str, list[str]]:
        """Demo names per split, "train" and "val" first (either may be empty)."""
        result: dict[str, list[str]] = {split: [] for split in S.SPLITS}
        for name in self.names:
            result.setdefault(self._splits[name], []).append(name)
        return result

    def split(self, name: str) -> str:
        """The split of one demo: declared in the file, or held out by name where the file declares none."""
        self.group(name)  # a clear error for an unknown name
        return self._splits[name]

    def group(self, name: str) -> h5py.Group:
        """The raw HDF5 group of one demo."""
        if name not in self.names:
            raise S.DatasetError(f"{self.path}: no demo named {name!r} (it has {len(self.names)} demos)")
        return self._file[S.DATA][name]

    def instruction(self, name: str) -> str:
        """The language instruction of one demo."""
        return self.format.instruction(self._file, self.group(name))

    def task(self, name: str) -> str:
        """The task name of one demo (the file's first task where the demo names none)."""
        return str(self.group(name).attrs.get(S.ATTR_TASK, self.meta.tasks[0]))

    def steps(self, name: str, cameras: tuple[str, ...] | None = None) -> int:
        """The number of steps of one demo, after checking that it has at least one and that every per-step
        array read with `cameras` (default: all) has exactly that many rows."""
        demo = self.group(name)
        keys = (S.ACTIONS, *self.format.step_keys(demo),
                *(f"{S.OBS}/{c}{S.RGB_SUFFIX}" for c in (self.meta.cameras if cameras is None else cameras)),
                *(f"{S.OBS}/{k}" for k in self.meta.proprio_keys))
        fix = f"Next step: run `python -m common.demos {self.path}` to list every problem, then {self.format.next_step}"
        rows = {}
        for key in keys:
            if key not in demo:
                raise S.DatasetError(f"{self.path}: {name}/{key}: missing. {fix}")
            shape = demo[key].shape
            rows[key] = int(shape[0]) if shape else 0
        length = rows[S.ACTIONS]
        if length == 0:
            raise S.DatasetError(f"{self.path}: {name}/{S.ACTIONS}: 0 steps; a demo needs at least one step. {fix}")
        wrong = [f"{key} has {n}" for key, n in rows.items() if n != length]
        if wrong:
            raise S.DatasetError(f"{self.path}: {name}: {S.ACTIONS} has {length} steps, but {', '.join(wrong)}; every "
                                 f"per-step array needs one row per step. {fix}")
        return length

    def episode(self, name: str, cameras: tuple[str, ...] | None = None) -> S.Episode:
        """Load one demo fully into memory; `cameras` limits which image streams are read."""
        cameras = self.meta.cameras if cameras is None else cameras
        length = self.steps(name, cameras)
        demo = self.group(name)
        obs = demo[S.OBS]
        return S.Episode(
            task=self.task(name),
            instruction=self.instruction(name),
            layout_id=int(demo.attrs.get(S.ATTR_LAYOUT_ID, -1)),
            layout=np.asarray(demo.attrs.get(S.ATTR_LAYOUT, np.zeros(0))),
            split=self._splits[name],
            actions=demo[S.ACTIONS][()].astype(np.float32),
            proprio={k: obs[k][()].astype(np.float32).reshape(length, -1) for k in self.meta.proprio_keys},
            images={camera: self.format.upright(obs[camera + S.RGB_SUFFIX][()]) for camera in cameras},
            success=self.format.success(demo, length),
            dones=demo[S.DONES][()].astype(bool),
            name=name,
        )

    def stats(self, key: str) -> S.Stats:
        """Per-dimension statistics of 'actions' or 'proprio' over the training split: stored in the file, or
        computed here for files that store none (LIBERO's)."""
        if S.STATS in self._file and key in self._file[S.STATS]:
            group = self._file[S.STATS][key]
            return S.Stats(**{name: group[name][()] for name in S.STAT_NAMES})
        episodes = [self.episode(n, cameras=()) for n in self.splits["train"]]
        if not episodes:
            raise S.DatasetError(f"{self.path}: no demo in the training split to compute '{key}' statistics on. "
                                 f"Next step: lower val_fraction or use a file with more demos")
        if key == S.ACTIONS:
            return S.Stats.of(np.concatenate([e.actions for e in episodes]))
        return S.Stats.of(np.concatenate([e.proprio_vector(self.meta.proprio_keys) for e in episodes]))

    def close(self) -> None:
        """Close the underlying file."""
        self._file.close()

    def __enter__(self) -> "DemoReader":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
