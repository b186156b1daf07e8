"""`reference`: train the reference conv behaviour-cloning policy on the collected demos (the study's yardstick)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from common.config import Problem, shared
from common.reference.model import ModelParams
from common.train import EvalParams, TrainParams

STAGE = "reference"
DEMOS = Path("data/collect/demos.hdf5")  # input: the collect stage's demos and their statistics
MODEL_DIR = Path("models/reference")  # model.safetensors + meta.json ("policy": "reference"), cached by DVC
METRICS = Path("metrics/reference.json")
PLOTS = Path("plots/reference.csv")  # the training curve (step, l1, loss, lr, grad_norm)
CHECKPOINTS = Path("checkpoints/reference")  # persists across DVC runs so that a killed run resumes
INPUTS = (DEMOS,)
OUTS = (MODEL_DIR,)
CODE = ("common/convstem.py", "common/cpu.py", "common/demos", "common/normalize.py", "common/reference",
        "common/train.py", "stages/reference")


@dataclasses.dataclass(frozen=True)
class Params:
    """The `reference` section of params.yaml."""

    chunk: int = shared("study.chunk")  # K actions per prediction
    val_fraction: float = shared("study.val_fraction")  # held out for validation in a demo file that declares no split
    cameras: tuple[str, ...]  # dataset cameras the policy sees, in this order
    normalization: Literal["quantile", "minmax"]  # actions and proprio to [-1, 1] by collect's statistics
    threads: int  # torch CPU threads (0: torch's default); 1 leaves the other core to the stage beside it
    shift: int  # random-shift augmentation: pad by this many pixels, crop back at a random offset (0: off)
    model: ModelParams
    train: TrainParams
    eval: EvalParams

    def problems(self) -> list[Problem]:
        """Range checks."""
        out = []
        if self.chunk < 1:
            out.append(Problem("chunk", self.chunk, "must be at least 1", "e.g. 8"))
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            out.append(Problem("cameras", list(self.cameras), "must name at least one camera, each once",
                               "e.g. [corner, gripperPOV]"))
        if self.threads < 0:
            out.append(Problem("threads", self.threads, "must not be negative", "0 (torch default) or e.g. 1"))
        if self.shift < 0:
            out.append(Problem("shift", self.shift, "must not be negative", "e.g. 4 (DrQ), 0: off"))
        return out
