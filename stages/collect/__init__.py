"""`collect`: roll out the simulator's scripted experts (`collect.simulator`) and store the successful episodes as
demonstrations."""

from __future__ import annotations

from pathlib import Path

from common.collection import CollectParams as Params

__all__ = ["CODE", "DEMOS", "METRICS", "OUTS", "Params", "STAGE"]

STAGE = "collect"
DEMOS = Path("data/collect/demos.hdf5")  # cached by DVC
METRICS = Path("metrics/collect.json")  # small, tracked in git
OUTS = (DEMOS,)
# The code this stage's output depends on: dvc.yaml lists the same paths as deps, and the dataset records
# their fingerprint as its code version.
CODE = ("common/collection", "common/cpu.py", "common/demos", "common/simulators", "stages/collect")
