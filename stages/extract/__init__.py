"""`extract`: annotate every step of every demo with the LAM's codes for (t, t+gap) and the action tokens of the
chunk starting at t, in two sidecar files (see common/latents)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from common.config import Problem

STAGE = "extract"
DEMOS = Path("data/collect/demos.hdf5")
LAM_DIR = Path("models/lam")  # the lam stage's output
TOKENIZER_DIR = Path("models/action_vq")  # the action_vq stage's output
LAM_CODES = Path("data/extract/lam_codes.hdf5")
ACTION_TOKENS = Path("data/extract/action_tokens.hdf5")
METRICS = Path("metrics/extract.json")
INPUTS = (DEMOS,)
MODELS = (LAM_DIR, TOKENIZER_DIR)
OUTS = (LAM_CODES, ACTION_TOKENS)
# Each sidecar records the fingerprint of the code that made it (so retraining or editing one side leaves the
# other file's bytes, and what reads it downstream, unchanged).
LAM_CODE = ("common/cpu.py", "common/demos", "common/lam", "common/latents", "stages/extract")
TOKENS_CODE = ("common/action_vq", "common/cpu.py", "common/demos", "common/latents", "common/normalize.py", "stages/extract")
CODE = tuple(sorted(set(LAM_CODE) | set(TOKENS_CODE)))


@dataclasses.dataclass(frozen=True)
class Params:
    """The `extract` section of params.yaml. Gap, K and vocabulary sizes come from the models' meta.json."""

    batch_size: int  # frame pairs / chunks per inference batch

    def problems(self) -> list[Problem]:
        """Range checks."""
        if self.batch_size < 1:
            return [Problem("batch_size", self.batch_size, "must be at least 1", "e.g. 256")]
        return []
