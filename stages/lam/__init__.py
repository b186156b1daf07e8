"""`lam`: train the image-based latent action model on frame pairs (t, t+gap) of the demonstrations."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from common.config import Problem, shared
from common.lam.model import LamModelParams
from common.train import TrainParams

STAGE = "lam"
DEMOS = Path("data/collect/demos.hdf5")  # input: the collect stage's output
MODEL_DIR = Path("models/lam")  # model.pt + meta.json, cached by DVC
MODEL_FILE, META_FILE = "model.pt", "meta.json"
CHECKPOINTS = Path("checkpoints/lam")  # persists across DVC runs so that a killed run resumes
METRICS = Path("metrics/lam.json")
INPUTS = (DEMOS,)
OUTS = (MODEL_DIR,)
CODE = ("common/cpu.py", "common/demos", "common/lam", "common/normalize.py", "common/probes.py", "common/train.py",
        "stages/lam")


@dataclasses.dataclass(frozen=True)
class EvalParams:
    """Held-out evaluation of the LAM."""

    max_pairs: int  # held-out frame pairs scored (evenly spaced over the val episodes)
    probe_train_pairs: int  # training pairs the probes are fit on
    probe_steps: int  # MLP probe optimisation steps
    bootstrap: int  # resamples of held-out episodes for confidence intervals

    def problems(self) -> list[Problem]:
        """Range checks."""
        return [Problem(f.name, getattr(self, f.name), "must be at least 1", "use a positive integer")
                for f in dataclasses.fields(self) if getattr(self, f.name) < 1]


@dataclasses.dataclass(frozen=True)
class Params:
    """The `lam` section of params.yaml."""

    val_fraction: float = shared("study.val_fraction")  # held out for validation in a demo file that declares no split
    camera: str  # which of the dataset's cameras the LAM watches
    gap: int  # frames t and t+gap; token extraction reads it from the LAM's metadata
    normalization: Literal["quantile", "minmax"]  # of the action chunks the action head and probes predict
    action_head_weight: float  # 0 disables the action-regression head (the study: 0.5)
    action_head_fraction: float  # share of each batch whose action chunk supervises the head (the study: ~0.1)
    threads: int  # torch CPU threads (0: torch's default); 1 when other stages share a 2-core machine
    model: LamModelParams
    train: TrainParams
    eval: EvalParams

    def problems(self) -> list[Problem]:
        """Range checks."""
        out = []
        if self.gap < 1:
            out.append(Problem("gap", self.gap, "must be at least 1", "use a positive number of steps"))
        if self.action_head_weight < 0:
            out.append(Problem("action_head_weight", self.action_head_weight, "must not be negative", "use >= 0"))
        if not 0 < self.action_head_fraction <= 1:
            out.append(Problem("action_head_fraction", self.action_head_fraction, "must be in (0, 1]", "e.g. 0.1"))
        if self.threads < 0:
            out.append(Problem("threads", self.threads, "must not be negative", "0 (torch default) or e.g. 1"))
        return out
