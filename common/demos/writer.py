"""Write demonstration files atomically and byte-reproducibly.

HDF5 stamps every object with its creation time unless told not to; with time tracking off, the same episodes
written in the same order give the same bytes, so DVC's content hash of the dataset is reproducible.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType

import h5py
import numpy as np

from common.atomic import atomic_path
from common.demos import schema as S


def _group(parent: h5py.Group, name: str) -> h5py.Group:
    """Create a subgroup without a creation timestamp."""
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    return h5py.Group(h5py.h5g.create(parent.id, name.encode(), gcpl=gcpl))


def _dataset(group: h5py.Group, name: str, data: np.ndarray, compress: bool) -> None:
    kwargs: dict = {"track_times": False}
    if compress:
        # One chunk per frame: frame-pair samplers read single steps without decoding a whole episode.
        kwargs.update(chunks=(1, *data.shape[1:]), compression="gzip", compression_opts=4, shuffle=True)
    group.create_dataset(name, data=data, **kwargs)


class DemoWriter:
    """Append episodes to a new demonstration file; it appears under its final name only when complete."""

    def __init__(self, path: Path, meta: S.DatasetMeta, compress_images: bool = True):
        self.path = Path(path)
        self.meta = meta
        self.compress_images = compress_images
        self._stack = ExitStack()
        self._file: h5py.File | None = None
        self._count = 0
        self._total = 0
        self._train_actions: list[np.ndarray] = []
        self._train_proprio: list[np.ndarray] = []

    def __enter__(self) -> "DemoWriter":
        tmp = self._stack.enter_context(atomic_path(self.path))
        self._file = self._stack.enter_context(h5py.File(tmp, "w", track_order=False))
        _group(self._file, S.DATA)
        return self

    def add(self, episode: S.Episode) -> str:
        """Write one episode as the next demo_<i>; return its group name."""
        assert self._file is not None, "use DemoWriter as a context manager"
        name = S.demo_name(self._count)
        demo = _group(self._file[S.DATA], name)
        demo.attrs[S.ATTR_NUM_SAMPLES] = episode.length
        demo.attrs[S.ATTR_INSTRUCTION] = episode.instruction
        demo.attrs[S.ATTR_TASK] = episode.task
        demo.attrs[S.ATTR_LAYOUT_ID] = episode.layout_id
        demo.attrs[S.ATTR_LAYOUT] = np.asarray(episode.layout, dtype=np.float64)
        demo.attrs[S.ATTR_SPLIT] = episode.split
        _dataset(demo, S.ACTIONS, np.asarray(episode.actions, dtype=np.float32), compress=False)
        _dataset(demo, S.SUCCESS, np.asarray(episode.success, dtype=np.uint8), compress=False)
        _dataset(demo, S.DONES, np.asarray(episode.dones, dtype=np.uint8), compress=False)
        obs = _group(demo, S.OBS)
        for camera in self.meta.cameras:
            _dataset(obs, camera + S.RGB_SUFFIX, episode.images[camera], compress=self.compress_images)
        for key in self.meta.proprio_keys:
            _dataset(obs, key, np.asarray(episode.proprio[key], dtype=np.float32), compress=False)
        if episode.split == "train":
            self._train_actions.append(episode.actions)
            self._train_proprio.append(episode.proprio_vector(self.meta.proprio_keys))
        self._count += 1
        self._total += episode.length
        return name

    def _finish(self) -> None:
        assert self._file is not None
        if not self._train_actions:
            raise S.DatasetError(f"{self.path}: no training-split episode was written; nothing to compute stats on")
        stats = _group(self._file, S.STATS)
        for key, arrays in ((S.ACTIONS, self._train_actions), ("proprio", self._train_proprio)):
            group = _group(stats, key)
            values = S.Stats.of(np.concatenate(arrays, axis=0))
            for stat in S.STAT_NAMES:
                _dataset(group, stat, getattr(values, stat), compress=False)
        data = self._file[S.DATA]
        data.attrs["env_name"] = self.meta.env
        data.attrs["total"] = self._total
        data.attrs["num_demos"] = self._count
        data.attrs[S.ATTR_PROBLEM_INFO] = json.dumps({"tasks": list(self.meta.tasks)})
        self._file.attrs[S.ATTR_FORMAT] = S.FORMAT_NAME
        self._file.attrs[S.ATTR_FORMAT_VERSION] = S.FORMAT_VERSION
        self._file.attrs[S.ATTR_METADATA] = self.meta.to_json()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:  # close and delete the partial file, then let the error propagate
            self._stack.__exit__(exc_type, exc, tb)
            return
        with self._stack:  # closes the file, then renames it into place (or deletes it if _finish fails)
            self._finish()
