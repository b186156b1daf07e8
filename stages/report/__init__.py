"""`report`: success per strategy x suite/category, seed-level tests against the baseline (Holm-corrected), a verdict
on each of the study's claims, their power, reference policies, LAM/tokenizer diagnostics, plots, reports/study.md."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from common.config import Problem, shared
from common.study import BASELINE, seeds_of, strategies_of

STAGE = "report"
SEEN_SUITE = "seen"  # evaluate's suite of the training layouts: the headline's measure of the baseline's strength
EVAL_RESULTS = Path("results/evaluate")  # results/evaluate/<strategy>-<seed>/episodes.jsonl (evaluate's contract)
EVAL_METRICS = Path("metrics/evaluate")  # metrics/evaluate/<strategy>-<seed>.json
FINETUNE_METRICS = Path("metrics/finetune")  # metrics/finetune/<strategy>-<seed>.json
FINETUNE_CURVES = Path("plots/finetune")  # plots/finetune/<strategy>-<seed>.csv: step + one column per loss
CURVE_COLUMN = "l1"  # the curves' action L1, comparable across strategies (their total losses are not)
LAM_METRICS = Path("metrics/lam.json")
TOKENIZER_METRICS = Path("metrics/action_vq.json")
REPORT_DIR = Path("reports")  # study.md + PNG figures, written as one folder
REPORT_FILE = "study.md"
METRICS = Path("metrics/report.json")
OUTS = (REPORT_DIR,)
CODE = ("common/cpu.py", "common/stats.py", "stages/report")


def run_name(strategy: str, seed: int) -> str:
    """`<strategy>-<seed>`: the DVC matrix item, as finetune and evaluate name their outputs."""
    return f"{strategy}-{seed}"


def reference_stage(name: str) -> str:
    """The DVC stage that evaluates a reference policy (`expert` -> `evaluate_expert`)."""
    return f"evaluate_{name}"


def evaluation_files(name: str) -> list[Path]:
    """What evaluate writes for one policy and the report reads: episodes and their totals."""
    return [EVAL_RESULTS / name / "episodes.jsonl", EVAL_METRICS / f"{name}.json"]


def inputs(strategies: list[str], seeds: list[int], references: Sequence[str] = ()) -> list[Path]:
    """Every file the report reads (the matrix, then the reference policies)."""
    names = [run_name(s, seed) for s in strategies for seed in seeds]
    return ([f for n in names for f in evaluation_files(n)]
            + [FINETUNE_METRICS / f"{n}.json" for n in names] + [FINETUNE_CURVES / f"{n}.csv" for n in names]
            + [LAM_METRICS, TOKENIZER_METRICS] + [f for n in references for f in evaluation_files(n)])


@dataclasses.dataclass(frozen=True)
class Params:
    """The `report` section of params.yaml, with the strategies and seeds of study.items."""

    strategies: list[str] = shared("study", strategies_of)  # of the matrix, `baseline` among them
    seeds: list[int] = shared("study", seeds_of)  # training seeds of the matrix
    references: list[str]  # reference policies evaluated once, no seed (evaluate_<name>: `expert`, `reference`)
    bootstrap: int  # resamples of every hierarchical bootstrap interval
    alpha: float  # family-wise error rate (Holm) for comparisons and claims
    min_effect: float  # smallest success gain (fraction, 0.05 = 5 points) worth claiming
    target_mde: float  # minimum detectable effect the power section asks seeds for (0.10 = 10 points)
    seed: int  # of the resampling

    def problems(self) -> list[Problem]:
        """Range checks."""
        out = []
        if len(set(self.references)) != len(self.references) or set(self.references) & set(self.strategies):
            out.append(Problem("references", self.references, "has duplicates or names a strategy",
                               "list each reference policy once, none of study.items' strategies"))
        if self.bootstrap < 100:
            out.append(Problem("bootstrap", self.bootstrap, "must be at least 100", "use e.g. 2000"))
        if not 0 < self.alpha < 1:
            out.append(Problem("alpha", self.alpha, "must be in (0, 1)", "e.g. 0.05"))
        if not 0 <= self.min_effect < 1:
            out.append(Problem("min_effect", self.min_effect, "must be in [0, 1)", "e.g. 0.05 (5 points)"))
        if not 0 < self.target_mde < 1:
            out.append(Problem("target_mde", self.target_mde, "must be in (0, 1)", "e.g. 0.10 (10 points)"))
        return out
