"""One package per DVC stage, each run as `python -m stages.<name>`; stages import common/, never each other.

Importing common first pins torch's CPU kernels before any stage imports torch (common/cpu.py).
"""

import common  # noqa: F401
