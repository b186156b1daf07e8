"""LIBERO's released files (robomimic layout, as LIBERO's create_dataset script writes them).

    /data                            attrs: env_name, problem_info (JSON with language_instruction), bddl_file_name
    /data/demo_<i>/actions           (T, 7) float64: delta end-effector pose (6) and gripper
    /data/demo_<i>/obs/<cam>_rgb     (T, H, W, 3) uint8, stored upside-down (turned 180 degrees)
    /data/demo_<i>/obs/ee_states     (T, 6), gripper_states (T, 2), ...
    /data/demo_<i>/dones, rewards    (T,) uint8; success is a positive reward

LIBERO stores none of this project's metadata and no splits: the metadata is derived from the layout, and the
reader holds out a validation split by demo name (splits.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from common.demos import schema as S
from common.demos.formats import register

# LIBERO's proprio: end-effector pose (6) + gripper fingers (2) = the 8-D state the VLA studies use.
LIBERO_PROPRIO_KEYS = ("ee_states", "gripper_states")
LIBERO_FALLBACK_PROPRIO_KEYS = ("ee_pos", "ee_ori", "gripper_states")
LIBERO_ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
PROBLEM_INFO = f"{S.DATA}.attrs['{S.ATTR_PROBLEM_INFO}']"
LIBERO_DATA_ATTRS = (S.ATTR_PROBLEM_INFO, "bddl_file_name")  # written by LIBERO's create_dataset, not robomimic's


def problem_info(file: h5py.File) -> dict[str, Any]:
    """The parsed `problem_info` attribute of the data group ({} when absent)."""
    raw = file[S.DATA].attrs.get(S.ATTR_PROBLEM_INFO)
    if raw is None:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise S.DatasetError(f"{file.filename}: {PROBLEM_INFO} is not JSON ({exc}). "
                             f"Next step: {LIBERO.next_step}") from exc


class LiberoFormat:
    """A robomimic-layout file without this project's `format` attribute: LIBERO's released demos."""

    name = "libero"
    signature = f"no root attribute '{S.ATTR_FORMAT}', and data.attrs {' or '.join(map(repr, LIBERO_DATA_ATTRS))}"
    missing_instruction = (f"no language instruction: {PROBLEM_INFO} has no non-empty '{S.ATTR_INSTRUCTION}' "
                           f"(nor has the demo attrs/{S.ATTR_INSTRUCTION})")
    next_step = "re-download the LIBERO file or recreate it with LIBERO's create_dataset script"

    def recognises(self, file: h5py.File) -> bool:
        """No `format` attribute, and a `data` group with LIBERO's own attributes."""
        return (S.ATTR_FORMAT not in file.attrs and S.DATA in file
                and any(key in file[S.DATA].attrs for key in LIBERO_DATA_ATTRS))

    def meta(self, file: h5py.File, path: Path, names: list[str]) -> S.DatasetMeta:
        """Metadata derived from the first demo's layout and the file's problem_info."""
        if not names:
            raise S.DatasetError(f"{path}: group '{S.DATA}' holds no demo_<i> groups")
        first = file[S.DATA][names[0]]
        for key in (S.ACTIONS, S.OBS):
            if key not in first:
                raise S.DatasetError(f"{path}: {names[0]}/{key}: missing; metadata is read from the first demo. "
                                     f"Next step: {self.next_step}")
        obs = first[S.OBS]
        cameras = tuple(sorted(k[: -len(S.RGB_SUFFIX)] for k in obs if k.endswith(S.RGB_SUFFIX)))
        if not cameras:
            raise S.DatasetError(f"{path}: {names[0]}/obs has no *_rgb camera datasets")
        height, width = obs[cameras[0] + S.RGB_SUFFIX].shape[1:3]
        keys = LIBERO_PROPRIO_KEYS if all(k in obs for k in LIBERO_PROPRIO_KEYS) else LIBERO_FALLBACK_PROPRIO_KEYS
        proprio_dim = sum(int(obs[k].shape[1]) for k in keys if k in obs)
        action_dim = int(first[S.ACTIONS].shape[1])
        action_names = LIBERO_ACTION_NAMES if action_dim == 7 else tuple(f"a{i}" for i in range(action_dim))
        problem = problem_info(file)
        return S.DatasetMeta(
            env=str(file[S.DATA].attrs.get("env_name", "libero")),
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

    def instruction(self, file: h5py.File, demo: h5py.Group) -> str:
        """The demo's own instruction attribute if any, else the file-wide one in problem_info."""
        if S.ATTR_INSTRUCTION in demo.attrs:
            return str(demo.attrs[S.ATTR_INSTRUCTION])
        return str(problem_info(file).get(S.ATTR_INSTRUCTION, ""))

    def step_keys(self, demo: h5py.Group) -> tuple[str, ...]:
        """dones, and rewards where the demo has them (success is read from them)."""
        return (S.DONES, S.REWARDS) if S.REWARDS in demo else (S.DONES,)

    def upright(self, frames: np.ndarray) -> np.ndarray:
        """LIBERO stores frames upside-down: turn them 180 degrees."""
        return np.ascontiguousarray(frames[:, ::-1, ::-1])

    def success(self, demo: h5py.Group, length: int) -> np.ndarray:
        """A positive reward; all False for a demo without rewards."""
        return demo[S.REWARDS][()] > 0 if S.REWARDS in demo else np.zeros(length, bool)

    def problems(self, demo: h5py.Group) -> Iterator[str]:
        """Nothing beyond the shared checks: LIBERO declares no splits (the reader derives them)."""
        return iter(())


LIBERO = register(LiberoFormat())
