"""Measurement scripts: they print figures; speed targets are never asserted in unit tests."""

import common  # noqa: F401,E402  (pins the CPU kernels before a benchmark imports torch or NumPy: common/cpu.py)
