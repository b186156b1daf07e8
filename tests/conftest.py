"""Test-wide settings: offline, headless, no analytics; tiny configurations only."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
os.environ["HF_HUB_OFFLINE"] = "1"  # a stray hub id fails at once instead of retrying
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("MLFLOW_TRACKING_URI", None)

import common  # noqa: E402,F401  (pins torch's and NumPy's CPU kernels before either is imported: common/cpu.py)
