"""The formats a demonstration file can be in: one small Protocol, a registry, and detection by content.

DemoReader (reader.py) holds everything formats share (opening, demo names, splits, length checks, statistics);
a format says only what differs: how to recognise its files, their metadata, where an instruction lives, how
images are stored and which per-step flags a demo carries. Each format lives in its own module (native.py,
libero.py) and registers itself; adding one is a new module, and nothing else asks which format it has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Protocol

import h5py
import numpy as np

from common.demos import schema as S


class DemoFormat(Protocol):
    """How one on-disk layout of demonstrations is read."""

    name: str
    signature: str  # what `recognises` looks for, for the error when no format recognises a file
    missing_instruction: str  # the validator's line for a demo without an instruction: where it should be
    next_step: str  # what to do about a broken file of this format

    def recognises(self, file: h5py.File) -> bool:
        """Whether `file` is in this format (formats recognise disjoint sets of files)."""
        ...

    def meta(self, file: h5py.File, path: Path, names: list[str]) -> S.DatasetMeta:
        """The file's metadata; `names` are its demo groups in order."""
        ...

    def instruction(self, file: h5py.File, demo: h5py.Group) -> str:
        """The language instruction of one demo ("" when there is none)."""
        ...

    def step_keys(self, demo: h5py.Group) -> tuple[str, ...]:
        """Per-step datasets of a demo besides actions and obs/: they must have one row per step."""
        ...

    def upright(self, frames: np.ndarray) -> np.ndarray:
        """Stored camera frames (T, H, W, 3) as upright images."""
        ...

    def success(self, demo: h5py.Group, length: int) -> np.ndarray:
        """(T,) bool: the task is solved after this step's action."""
        ...

    def problems(self, demo: h5py.Group) -> Iterator[str]:
        """What the validator reports beyond the checks every format shares."""
        ...


FORMATS: dict[str, DemoFormat] = {}


def register(fmt: DemoFormat) -> DemoFormat:
    """Make `fmt` one of the formats DemoReader detects."""
    if fmt.name in FORMATS and FORMATS[fmt.name] is not fmt:
        raise ValueError(f"a demonstration format named {fmt.name!r} is already registered ({FORMATS[fmt.name]!r})")
    FORMATS[fmt.name] = fmt
    return fmt


def format_of(file: h5py.File, path: Path) -> DemoFormat:
    """The one registered format that recognises `file`, or a DatasetError."""
    matches = [fmt for fmt in FORMATS.values() if fmt.recognises(file)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        known = "; ".join(f"{name}: {fmt.signature}" for name, fmt in sorted(FORMATS.items()))
        raise S.DatasetError(f"{path}: no known demonstration format recognises it ({known}). Next step: pass a "
                             "file of one of these formats, or add a format module to common/demos/ (formats.py)")
    raise S.DatasetError(f"{path}: formats {[f.name for f in matches]} all recognise it; their `recognises` checks "
                         "must be disjoint. Next step: fix the newer format's check in common/demos/")
