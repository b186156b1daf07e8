"""The demonstration file format: LIBERO's robomimic layout plus self-describing metadata.

    /data                         attrs: env_name, total, num_demos, problem_info (JSON, LIBERO-compatible)
    /data/demo_<i>                attrs: num_samples, language_instruction, task_name, layout_id, layout, split
    /data/demo_<i>/actions        (T, A) float32, what the simulator applied
    /data/demo_<i>/obs/<cam>_rgb  (T, H, W, 3) uint8, stored upright
    /data/demo_<i>/obs/<proprio>  (T, d) float32, e.g. ee_pos (T, 3) and gripper_states (T, 1)
    /data/demo_<i>/success        (T,) uint8, task solved after this step's action
    /data/demo_<i>/dones          (T,) uint8, last step of the episode
    /stats/<actions|proprio>/<s>  (A,) / (P,) float32 for s in mean, std, min, max, q01, q99
    / attrs: format, format_version, metadata (JSON of DatasetMeta)

Step t pairs the observation before the action with the action: (obs_t, a_t). LIBERO's released files (no `format`
attribute, images stored upside-down) are read through the same reader, see libero.py and formats.py.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

FORMAT_NAME = "lasd-demos"
FORMAT_VERSION = 1

# HDF5 paths and attribute names: one constant each, used by writer, reader and validator.
DATA = "data"
STATS = "stats"
DEMO_PREFIX = "demo_"
ACTIONS = "actions"
OBS = "obs"
SUCCESS = "success"
DONES = "dones"
REWARDS = "rewards"  # LIBERO's sparse success reward; our files carry `success` instead
RGB_SUFFIX = "_rgb"
ATTR_FORMAT = "format"
ATTR_FORMAT_VERSION = "format_version"
ATTR_METADATA = "metadata"
ATTR_NUM_SAMPLES = "num_samples"
ATTR_INSTRUCTION = "language_instruction"
ATTR_TASK = "task_name"
ATTR_LAYOUT_ID = "layout_id"
ATTR_LAYOUT = "layout"
ATTR_SPLIT = "split"
ATTR_PROBLEM_INFO = "problem_info"
STAT_NAMES = ("mean", "std", "min", "max", "q01", "q99")
SPLITS = ("train", "val")


class DatasetError(ValueError):
    """A demonstration file is missing, unreadable or inconsistent; the message names file, demo and field."""


def demo_name(index: int) -> str:
    """The group name of the demo with this index."""
    return f"{DEMO_PREFIX}{index}"


def demo_sort_key(name: str) -> int:
    """Numeric order for demo group names (demo_10 after demo_9)."""
    return int(name[len(DEMO_PREFIX) :])


@dataclasses.dataclass(frozen=True)
class ActionSpace:
    """What each action dimension means and its bounds."""

    dim: int
    names: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class DatasetMeta:
    """File-level metadata that downstream stages read instead of retyping settings."""

    env: str
    env_version: str
    cameras: tuple[str, ...]
    image_size: tuple[int, int]  # (height, width)
    image_origin: str  # "upright": row 0 is the top of the scene
    action_space: ActionSpace
    proprio_keys: tuple[str, ...]
    proprio_dim: int
    control_hz: float
    collection_seed: int
    code_version: str
    tasks: tuple[str, ...]
    # Object/goal layouts never used for a demonstration, per task, for evaluation: {task: [{layout_id, layout}]}
    heldout_layouts: dict[str, list[dict[str, Any]]]
    extra: dict[str, Any]

    def to_json(self) -> str:
        """Serialise to the JSON stored in the file's `metadata` attribute."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DatasetMeta":
        """Parse the `metadata` attribute; raises KeyError/TypeError on a malformed record."""
        raw = json.loads(text)
        raw["action_space"] = ActionSpace(
            dim=int(raw["action_space"]["dim"]),
            names=tuple(raw["action_space"]["names"]),
            low=tuple(raw["action_space"]["low"]),
            high=tuple(raw["action_space"]["high"]),
        )
        for key in ("cameras", "image_size", "proprio_keys", "tasks"):
            raw[key] = tuple(raw[key])
        return cls(**raw)


@dataclasses.dataclass(frozen=True)
class Episode:
    """One demonstration in memory; arrays are indexed by step."""

    task: str
    instruction: str
    layout_id: int
    layout: np.ndarray  # the simulator's object/goal placement vector
    split: str
    actions: np.ndarray  # (T, A) float32
    proprio: dict[str, np.ndarray]  # key -> (T, d) float32
    images: dict[str, np.ndarray]  # camera -> (T, H, W, 3) uint8, upright
    success: np.ndarray  # (T,) bool
    dones: np.ndarray  # (T,) bool
    name: str = ""  # demo group name once written/read

    @property
    def length(self) -> int:
        """Number of steps."""
        return int(self.actions.shape[0])

    def proprio_vector(self, keys: tuple[str, ...]) -> np.ndarray:
        """The proprio keys concatenated in order: (T, P) float32."""
        return np.concatenate([self.proprio[k] for k in keys], axis=1).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Stats:
    """Per-dimension statistics of one quantity, for normalization."""

    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    q01: np.ndarray
    q99: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray) -> "Stats":
        """Statistics of an (N, D) array over its first axis."""
        values = np.asarray(values, dtype=np.float64)
        q01, q99 = np.percentile(values, [1.0, 99.0], axis=0)
        as32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
        return cls(
            mean=as32(values.mean(0)),
            std=as32(values.std(0)),
            min=as32(values.min(0)),
            max=as32(values.max(0)),
            q01=as32(q01),
            q99=as32(q99),
        )
