"""`finetune`: train the VLA under one supervision strategy and seed (a DVC matrix item `<strategy>-<seed>`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from common.config import Problem, closest_name, shared
from common.train import EvalParams, TrainParams
from common.vla.augment import AugmentParams
from common.vla.backbone import BackboneParams
from common.vla.head import HeadParams
from common.vla.strategies import STRATEGIES
from stages.pretrain import MODEL as PRETRAIN_MODEL

STAGE = "finetune"
DEMOS = Path("data/collect/demos.hdf5")
LAM_CODES = Path("data/extract/lam_codes.hdf5")  # la_align, la_direct, la_cond
ACTION_TOKENS = Path("data/extract/action_tokens.hdf5")  # la_tok
# What a strategy reads besides the demos, by its latent kind (`Strategy.latent`; "none": nothing)
LATENT_FILES = {"lam": LAM_CODES, "action_vq": ACTION_TOKENS}
MODEL_ROOT = Path("models/finetune")  # models/finetune/<strategy>-<seed>/
METRICS_ROOT = Path("metrics/finetune")  # metrics/finetune/<strategy>-<seed>.json
PLOTS_ROOT = Path("plots/finetune")  # plots/finetune/<strategy>-<seed>.csv: the training loss curve
CHECKPOINT_ROOT = Path("checkpoints/finetune")  # persists across DVC runs so that a killed run resumes
# common/simulators: the tiny tokenizer is learnt from the simulator's instructions (every simulator, so that a new
# one is a new module and nothing else)
CODE = ("common/convstem.py", "common/cpu.py", "common/demos", "common/latents", "common/normalize.py",
        "common/simulators", "common/train.py", "common/vla", "stages/finetune")
INPUTS = (DEMOS,)
# The pretrain stage's shared start: a DVC dep of every item, read when backbone.pretrained names it (the default)
START = PRETRAIN_MODEL


@dataclasses.dataclass(frozen=True)
class Item:
    """One matrix item: `--strategy la_tok --seed 0` (any registered strategy, common/vla/strategies)."""

    strategy: str
    seed: int

    def problems(self) -> list[Problem]:
        """The strategy must be registered."""
        if self.strategy in STRATEGIES:
            return []
        match = closest_name(self.strategy, STRATEGIES)
        return [Problem("strategy", self.strategy, f"must be one of {sorted(STRATEGIES)}",
                        f"pick one of them{f' (did you mean {match!r}?)' if match else ''}")]

    def latent_file(self) -> Path | None:
        """The latent sidecar its strategy reads (None: none)."""
        return LATENT_FILES.get(STRATEGIES[self.strategy].latent)

    def reads(self) -> Path:
        """What its training targets come from besides the demos' actions (study.items' `reads`, the item's DVC
        dep): its latent sidecar, else the demos."""
        return self.latent_file() or DEMOS

    @property
    def name(self) -> str:
        """`<strategy>-<seed>`: the DVC item, output folder, metrics file and MLflow run name."""
        return f"{self.strategy}-{self.seed}"


def outputs(item: Item) -> tuple[Path, Path, Path]:
    """(model dir, metrics file, plots file) of one matrix item."""
    return MODEL_ROOT / item.name, METRICS_ROOT / f"{item.name}.json", PLOTS_ROOT / f"{item.name}.csv"


@dataclasses.dataclass(frozen=True)
class Params:
    """The `finetune` section of params.yaml (shared by every strategy; each strategy's weights: strategy_cfg)."""

    chunk: int = shared("study.chunk")  # K actions per prediction, the action tokenizer's
    val_fraction: float = shared("study.val_fraction")  # held out for validation in a demo file that declares no split
    cameras: tuple[str, ...]  # dataset cameras the policy sees, in this order
    normalization: Literal["quantile", "minmax"]  # actions and proprio to [-1, 1]
    threads: int  # torch CPU threads (0: torch's default); 1 avoids oversubscribing a shared 2-core machine
    placeholders_per_step: int  # baseline and la_align prompt this many x chunk placeholders (the study: 5)
    backbone: BackboneParams
    # frozen: the vision encoder keeps the pretrained start's weights (its projection into the LLM trains)
    vision_encoder: Literal["trained", "frozen"]
    head: HeadParams
    augment: AugmentParams
    train: TrainParams  # train.seed is replaced by the matrix item's seed
    grad_accum: int  # micro-batches per optimizer step (train.batch_size must split evenly)
    eval: EvalParams

    def problems(self) -> list[Problem]:
        """Range checks."""
        out = []
        if self.grad_accum < 1 or self.train.batch_size % self.grad_accum:
            out.append(Problem("grad_accum", self.grad_accum, f"must be >= 1 and divide train.batch_size "
                               f"({self.train.batch_size})", "e.g. 1, 2 or 4"))
        if self.threads < 0:
            out.append(Problem("threads", self.threads, "must not be negative", "0 (torch default) or e.g. 1"))
        if self.placeholders_per_step < 1:
            out.append(Problem("placeholders_per_step", self.placeholders_per_step, "must be at least 1",
                               "e.g. 2 (la_align needs 2 or more), or the study's 5"))
        if self.chunk < 1:
            out.append(Problem("chunk", self.chunk, "must be at least 1", "e.g. 8"))
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            out.append(Problem("cameras", list(self.cameras), "must name at least one camera, each once",
                               "e.g. [corner, gripperPOV]"))
        if self.vision_encoder == "frozen" and self.backbone.preset == "tiny":
            out.append(Problem("vision_encoder", self.vision_encoder, "would keep the tiny preset's random weights",
                               "use trained, or start from pretrained weights (backbone.preset: pretrained)"))
        return out
