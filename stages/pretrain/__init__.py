"""`pretrain`: one start for every fine-tuning, trained on the MT50 tasks outside the study (`collect_pretrain`).

The tiny VLA is built exactly as finetune's baseline (the `finetune` section's chunk, cameras, normalization,
placeholders, backbone and head, read from there), from random weights, with the placeholder and every latent token
any strategy adds already in its vocabulary (their counts from `lam.model` and `action_vq.model`, so pretrain does
not wait for those stages). It trains the strategy-agnostic objective, the L1 of the bridge head's action chunks,
and saves the backbone as a Hugging Face checkpoint plus the head's weights: `finetune.backbone.preset: pretrained`
with `pretrained: models/pretrain` starts from it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from common.action_vq.model import TokenizerParams
from common.config import Problem, from_dict, read_yaml, section_of, shared, shared_keys
from common.lam.model import LamModelParams
from common.train import EvalParams, TrainParams
from common.vla.augment import AugmentParams
from common.vla.backbone import BackboneParams
from common.vla.head import HeadParams

STAGE = "pretrain"
DEMOS = Path("data/pretrain/demos.hdf5")
MODEL = Path("models/pretrain")  # cached by DVC; finetune.backbone.pretrained names it
METRICS = Path("metrics/pretrain.json")
PLOTS = Path("plots/pretrain.csv")
CHECKPOINTS = Path("checkpoints/pretrain")  # persists across DVC runs so that a killed run resumes
OUTS = (MODEL,)
INPUTS = (DEMOS,)
CODE = ("common/action_vq/model.py", "common/convstem.py", "common/cpu.py", "common/demos", "common/lam/model.py",
        "common/normalize.py", "common/simulators", "common/train.py", "common/vla", "stages/pretrain")
OBJECTIVE = "l1 of the bridge head's normalized action chunks (the baseline's; no latent targets)"


@dataclasses.dataclass(frozen=True)
class Params:
    """The `pretrain` section of params.yaml."""

    val_fraction: float = shared("study.val_fraction")  # held out for validation in a demo file that declares no split
    threads: int  # torch CPU threads (0: torch's default)
    train: TrainParams
    eval: EvalParams  # held-out (val split of the pretraining tasks) L1

    def problems(self) -> list[Problem]:
        """Range checks."""
        if self.threads < 0:
            return [Problem("threads", self.threads, "must not be negative", "0 (torch default) or e.g. 1")]
        return []


@dataclasses.dataclass(frozen=True)
class Architecture:
    """The keys of the `finetune` section that shape the VLA and its inputs (read from there, never retyped)."""

    chunk: int = shared("study.chunk")
    cameras: tuple[str, ...]
    normalization: Literal["quantile", "minmax"]
    placeholders_per_step: int
    backbone: BackboneParams  # pretrain builds the `tiny` preset of it from random weights, LoRA off
    head: HeadParams
    augment: AugmentParams


def read_architecture(path: Path) -> Architecture:
    """The VLA's shape from the params file's `finetune` section."""
    data = read_yaml(path)
    section = {f.name: data["finetune"][f.name] for f in dataclasses.fields(Architecture)
               if f.name not in shared_keys(Architecture)}
    return section_of({**data, "finetune": section}, path, "finetune", Architecture)


def read_latent_meta(path: Path) -> dict[str, dict[str, Any]]:
    """Per latent kind, the metadata its strategies' vocabularies need, from the LAM's and tokenizer's params."""
    data = read_yaml(path)
    lam = from_dict(LamModelParams, data["lam"]["model"], prefix="lam.model", source=str(path))
    vq = from_dict(TokenizerParams, data["action_vq"]["model"], prefix="action_vq.model", source=str(path))
    return {"none": {}, "lam": {"codebook_size": lam.codebook_size, "codes_per_transition": lam.codes_per_transition},
            "action_vq": {"vocab_size": vq.vocab_size}}
