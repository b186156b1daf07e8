"""Read demonstration files: this project's format and real LIBERO (robomimic-layout) files alike."""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import Iterator

import h5py
import numpy as np

from common.demos import schema as S

# LIBERO's proprio: end-effector pose (6) + gripper fingers (2) = the 8-D state the VLA studies use.
LIBERO_PROPRIO_KEYS = ("ee_states", "gripper_states")
LIBERO_FALLBACK_PROPRIO_KEYS = ("ee_pos", "ee_ori", "gripper_states")
LIBERO_ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")


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
    """Random access to the demos of one file. Use as a context manager, or call close()."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = open_h5(self.path)
        try:
            if S.DATA not in self._file:
                raise S.DatasetError(f"{self.path}: no '{S.DATA}' group; this is not a demonstration file")
            self.is_libero = S.ATTR_FORMAT not in self._file.attrs
            self.meta = self._libero_meta() if self.is_libero else self._own_meta()
            self.names = sorted(
                (n for n in self._file[S.DATA] if n.startswith(S.DEMO_PREFIX)), key=S.demo_sort_key
            )
        except BaseException:
            self._file.close()
            raise

    def _own_meta(self) -> S.DatasetMeta:
        version = int(self._file.attrs.get(S.ATTR_FORMAT_VERSION, -1))
        if self._file.attrs[S.ATTR_FORMAT] != S.FORMAT_NAME or version != S.FORMAT_VERSION:
            raise S.DatasetError(
                f"{self.path}: format {self._file.attrs[S.ATTR_FORMAT]!r} version {version}, expected "
                f"{S.FORMAT_NAME!r} version {S.FORMAT_VERSION}. Next step: rerun `dvc repro collect`"
            )
        try:
            return S.DatasetMeta.from_json(str(self._file.attrs[S.ATTR_METADATA]))
        except (KeyError, TypeError, ValueError) as exc:
            raise S.DatasetError(f"{self.path}: attribute '{S.ATTR_METADATA}' is malformed ({exc!r})") from exc

    def _libero_meta(self) -> S.DatasetMeta:
        """Derive metadata from a LIBERO file's layout (LIBERO stores none of ours)."""
        data = self._file[S.DATA]
        names = sorted((n for n in data if n.startswith(S.DEMO_PREFIX)), key=S.demo_sort_key)
        if not names:
            raise S.DatasetError(f"{self.path}: group '{S.DATA}' holds no demo_<i> groups")
        first = data[names[0]]
        obs = first[S.OBS]
        cameras = tuple(sorted(k[: -len(S.RGB_SUFFIX)] for k in obs if k.endswith(S.RGB_SUFFIX)))
        if not cameras:
            raise S.DatasetError(f"{self.path}: {names[0]}/obs has no *_rgb camera datasets")
        height, width = obs[cameras[0] + S.RGB_SUFFIX].shape[1:3]
        keys = LIBERO_PROPRIO_KEYS if all(k in obs for k in LIBERO_PROPRIO_KEYS) else LIBERO_FALLBACK_PROPRIO_KEYS
        proprio_dim = sum(int(obs[k].shape[1]) for k in keys if k in obs)
        action_dim = int(first[S.ACTIONS].shape[1])
        action_names = LIBERO_ACTION_NAMES if action_dim == 7 else tuple(f"a{i}" for i in range(action_dim))
        problem = self._problem_info()
        return S.DatasetMeta(
            env=str(data.attrs.get("env_name", "libero")),
            env_version="unknown",
            cameras=cameras,
            image_size=(int(height), int(width)),
            image_origin="upright",  # after the 180-degree turn applied on read
            action_space=S.ActionSpace(action_dim, action_names, (-1.0,) * action_dim, (1.0,) * action_dim),
            proprio_keys=keys,
            proprio_dim=proprio_dim,
            control_hz=20.0,  # LIBERO's robosuite control frequency
            collection_seed=-1,
            code_version="libero",
            tasks=(problem.get("problem_name", "libero"),),
            heldout_layouts={},
            extra={"source": "libero", "problem_info": problem},
        )

    def _problem_info(self) -> dict:
        raw = self._file[S.DATA].attrs.get(S.ATTR_PROBLEM_INFO)
        if raw is None:
            return {}
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise S.DatasetError(f"{self.path}: data.attrs['{S.ATTR_PROBLEM_INFO}'] is not JSON ({exc})") from exc

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[S.Episode]:
        for name in self.names:
            yield self.episode(name)

    def group(self, name: str) -> h5py.Group:
        """The raw HDF5 group of one demo."""
        if name not in self.names:
            raise S.DatasetError(f"{self.path}: no demo named {name!r} (it has {len(self.names)} demos)")
        return self._file[S.DATA][name]

    def instruction(self, name: str) -> str:
        """The language instruction of one demo (LIBERO: the file-wide problem_info)."""
        demo = self.group(name)
        if S.ATTR_INSTRUCTION in demo.attrs:
            return str(demo.attrs[S.ATTR_INSTRUCTION])
        return str(self._problem_info().get(S.ATTR_INSTRUCTION, ""))

    def episode(self, name: str, cameras: tuple[str, ...] | None = None) -> S.Episode:
        """Load one demo fully into memory; `cameras` limits which image streams are read."""
        demo = self.group(name)
        obs = demo[S.OBS]
        images = {}
        for camera in cameras if cameras is not None else self.meta.cameras:
            frames = obs[camera + S.RGB_SUFFIX][()]
            images[camera] = np.ascontiguousarray(frames[:, ::-1, ::-1]) if self.is_libero else frames
        actions = demo[S.ACTIONS][()].astype(np.float32)
        if self.is_libero:
            success = demo[S.REWARDS][()] > 0 if S.REWARDS in demo else np.zeros(len(actions), bool)
        else:
            success = demo[S.SUCCESS][()].astype(bool)
        return S.Episode(
            task=str(demo.attrs.get(S.ATTR_TASK, self.meta.tasks[0])),
            instruction=self.instruction(name),
            layout_id=int(demo.attrs.get(S.ATTR_LAYOUT_ID, -1)),
            layout=np.asarray(demo.attrs.get(S.ATTR_LAYOUT, np.zeros(0))),
            split=str(demo.attrs.get(S.ATTR_SPLIT, "train")),
            actions=actions,
            proprio={k: obs[k][()].astype(np.float32).reshape(len(actions), -1) for k in self.meta.proprio_keys},
            images=images,
            success=success,
            dones=demo[S.DONES][()].astype(bool),
            name=name,
        )

    def stats(self, key: str) -> S.Stats:
        """Stored per-dimension statistics of 'actions' or 'proprio' (computed on the fly for LIBERO files)."""
        if S.STATS in self._file and key in self._file[S.STATS]:
            group = self._file[S.STATS][key]
            return S.Stats(**{name: group[name][()] for name in S.STAT_NAMES})
        episodes = [self.episode(n, cameras=()) for n in self.names]
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
