"""`action_vq`: train the action tokenizer (VQ or FSQ) over normalized chunks of K actions."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from common.action_vq.model import TokenizerParams
from common.config import Problem, shared
from common.train import TrainParams

STAGE = "action_vq"
DEMOS = Path("data/collect/demos.hdf5")  # input: the collect stage's output (actions + their statistics)
MODEL_DIR = Path("models/action_vq")  # model.pt + meta.json, cached by DVC
CHECKPOINTS = Path("checkpoints/action_vq")  # persists across DVC runs so that a killed run resumes
METRICS = Path("metrics/action_vq.json")
INPUTS = (DEMOS,)
OUTS = (MODEL_DIR,)
CODE = ("common/action_vq", "common/cpu.py", "common/demos", "common/lam/evaluate.py", "common/normalize.py",
        "common/train.py", "stages/action_vq")


@dataclasses.dataclass(frozen=True)
class Params:
    """The `action_vq` section of params.yaml."""

    chunk: int = shared("study.chunk")  # K actions per chunk; extraction reads it from the tokenizer's meta
    val_fraction: float = shared("study.val_fraction")  # held out for validation in a demo file that declares no split
    normalization: Literal["quantile", "minmax"]  # statistics from the collect stage's file
    model: TokenizerParams
    train: TrainParams

    def problems(self) -> list[Problem]:
        """Range and consistency checks."""
        out = []
        if self.chunk < 1:
            out.append(Problem("chunk", self.chunk, "must be at least 1", "use a positive number of steps, e.g. 8"))
        elif self.model.steps_per_token >= 1 and self.chunk % self.model.steps_per_token:
            out.append(Problem("chunk", self.chunk, f"is not a multiple of model.steps_per_token="
                               f"{self.model.steps_per_token}", "make chunk a multiple of it"))
        return out
