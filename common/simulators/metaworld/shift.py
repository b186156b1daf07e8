"""Scene-level visual shifts: seeded edits of a MuJoCo model's appearance that leave its physics untouched.

A shift of severity s in [0, 1] (0: the scene as collected) changes
  - the table's and the floor's colour: their materials' rgba (which tints their textures) blended towards a
    random colour by s,
  - the lighting: each light's diffuse intensity scaled by up to +-60% s, its direction tilted by up to ~30 deg s,
  - the cameras' pose: position moved by up to 3 cm s per axis, orientation turned by up to 4 deg s.
None of these enters the dynamics (colours, lights and camera frames are rendering-only model fields), so a
policy that reads the state, such as the scripted expert, behaves exactly as before; a policy reading pixels
sees a different scene.
"""

from __future__ import annotations

import numpy as np

# mujoco as imported there, after the headless rendering back-end (MUJOCO_GL) is chosen
from common.simulators.metaworld.scene import mujoco

# Geoms whose materials are recoloured: the floor plane and every geom of the table's body.
FLOOR_GEOM = "floor"
TABLE_BODY = "tablelink"
MAX_LIGHT_GAIN = 0.6  # diffuse intensity scaled within [1 - 0.6 s, 1 + 0.6 s]
MAX_LIGHT_TILT = 0.5  # norm of the random vector added to each light's unit direction, times s
MAX_CAMERA_SHIFT = 0.03  # metres per axis, times s
MAX_CAMERA_TURN = np.deg2rad(4.0)  # radians, times s


class VisualShift:
    """Applies seeded appearance edits to one model, restoring the collected appearance first each time."""

    def __init__(self, model: mujoco.MjModel):
        self.model = model
        self.materials = self._scene_materials(model)
        self.plain_geoms = self._scene_plain_geoms(model)
        # The collected appearance, restored before every (re-)application.
        self._mat_rgba = model.mat_rgba.copy()
        self._geom_rgba = model.geom_rgba.copy()
        self._light_diffuse = model.light_diffuse.copy()
        self._light_dir = model.light_dir.copy()
        self._cam_pos = model.cam_pos.copy()
        self._cam_quat = model.cam_quat.copy()

    @staticmethod
    def _scene_geoms(model: mujoco.MjModel) -> list[int]:
        table = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, TABLE_BODY)
        floor = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, FLOOR_GEOM)
        geoms = [g for g in range(model.ngeom) if table >= 0 and model.geom_bodyid[g] == table]
        return geoms + ([floor] if floor >= 0 else [])

    @classmethod
    def _scene_materials(cls, model: mujoco.MjModel) -> list[int]:
        return sorted({int(model.geom_matid[g]) for g in cls._scene_geoms(model) if model.geom_matid[g] >= 0})

    @classmethod
    def _scene_plain_geoms(cls, model: mujoco.MjModel) -> list[int]:
        return [g for g in cls._scene_geoms(model) if model.geom_matid[g] < 0]

    def restore(self) -> None:
        """Put back the appearance the model had when this object was made."""
        m = self.model
        m.mat_rgba[:] = self._mat_rgba
        m.geom_rgba[:] = self._geom_rgba
        m.light_diffuse[:] = self._light_diffuse
        m.light_dir[:] = self._light_dir
        m.cam_pos[:] = self._cam_pos
        m.cam_quat[:] = self._cam_quat

    def apply(self, severity: float | None, seed: int) -> None:
        """Restore, then (severity > 0) apply the shift drawn from `seed`; takes effect at the next reset/forward."""
        self.restore()
        if not severity:
            return
        if not 0.0 <= severity <= 1.0:
            raise ValueError(f"visual shift severity {severity} is outside [0, 1]")
        rng = np.random.default_rng(seed)
        m, s = self.model, float(severity)
        for mat in self.materials:
            target = rng.uniform(0.15, 1.0, 3)
            m.mat_rgba[mat, :3] = (1 - s) * self._mat_rgba[mat, :3] + s * target
        for geom in self.plain_geoms:
            target = rng.uniform(0.15, 1.0, 3)
            m.geom_rgba[geom, :3] = (1 - s) * self._geom_rgba[geom, :3] + s * target
        for light in range(m.nlight):
            gain = 1.0 + s * MAX_LIGHT_GAIN * rng.uniform(-1.0, 1.0)
            m.light_diffuse[light] = np.clip(self._light_diffuse[light] * gain, 0.0, 1.0)
            direction = self._light_dir[light] + s * MAX_LIGHT_TILT * rng.uniform(-1.0, 1.0, 3)
            m.light_dir[light] = direction / max(np.linalg.norm(direction), 1e-9)
        for cam in range(m.ncam):
            m.cam_pos[cam] = self._cam_pos[cam] + s * MAX_CAMERA_SHIFT * rng.uniform(-1.0, 1.0, 3)
            axis = rng.normal(size=3)
            turn = np.zeros(4)
            mujoco.mju_axisAngle2Quat(turn, axis / np.linalg.norm(axis), s * MAX_CAMERA_TURN * rng.uniform(-1, 1))
            quat = np.zeros(4)
            mujoco.mju_mulQuat(quat, self._cam_quat[cam], turn)
            m.cam_quat[cam] = quat
