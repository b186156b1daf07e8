"""`report`: success per strategy x suite/category with bootstrap intervals, paired tests against the baseline
(Holm-corrected), a verdict on each of the study's claims, LAM/tokenizer diagnostics, plots and reports/study.md."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from common.config import Problem

STAGE = "report"
BASELINE = "baseline"  # the study's reference strategy: every comparison is against it
EVAL_RESULTS = Path("results/evaluate")  # results/evaluate/<strategy>-<seed>/episodes.jsonl (evaluate's contract)
EVAL_METRICS = Path("metrics/evaluate")  # metrics/evaluate/<strategy>-<seed>.json
FINETUNE_METRICS = Path("metrics/finetune")  # metrics/finetune/<strategy>-<seed>.json
FINETUNE_CURVES = Path("plots/finetune")  # plots/finetune/<strategy>-<seed>.csv: step + loss columns
LAM_METRICS = Path("metrics/lam.json")
TOKENIZER_METRICS = Path("metrics/action_vq.json")
REPORT_DIR = Path("reports")  # study.md + PNG figures, written as one folder
REPORT_FILE = "study.md"
METRICS = Path("metrics/report.json")
OUTS = (REPORT_DIR,)
CODE = ("common/stats.py", "stages/report")


def run_name(strategy: str, seed: int) -> str:
    """`<strategy>-<seed>`: the DVC matrix item, as finetune and evaluate name their outputs."""
    return f"{strategy}-{seed}"


def inputs(strategies: list[str], seeds: list[int]) -> list[Path]:
    """Every file the report reads, for dvc.yaml's deps."""
    names = [run_name(s, seed) for s in strategies for seed in seeds]
    return ([EVAL_RESULTS / n / "episodes.jsonl" for n in names] + [EVAL_METRICS / f"{n}.json" for n in names]
            + [FINETUNE_METRICS / f"{n}.json" for n in names] + [FINETUNE_CURVES / f"{n}.csv" for n in names]
            + [LAM_METRICS, TOKENIZER_METRICS])


@dataclasses.dataclass(frozen=True)
class Params:
    """The `report` section of params.yaml."""

    strategies: list[str]  # evaluated strategies (the finetune/evaluate matrix), `baseline` among them
    seeds: list[int]  # training seeds of the matrix
    bootstrap: int  # resamples for every interval
    permutations: int  # random sign patterns when a paired test has more than 15 pairs (else exact)
    alpha: float  # family-wise error rate (Holm) for comparisons and claims
    min_effect: float  # smallest success gain (fraction, 0.05 = 5 points) worth claiming
    seed: int  # of the resampling

    def problems(self) -> list[Problem]:
        """Range checks."""
        out = []
        if BASELINE not in self.strategies:
            out.append(Problem("strategies", self.strategies, f"must include `{BASELINE}`", "add it: every "
                               "comparison is against it"))
        if len(set(self.strategies)) != len(self.strategies) or len(set(self.seeds)) != len(self.seeds):
            out.append(Problem("strategies/seeds", [self.strategies, self.seeds], "has duplicates", "list each once"))
        if not self.seeds:
            out.append(Problem("seeds", self.seeds, "must not be empty", "e.g. [0, 1, 2]"))
        if self.bootstrap < 100 or self.permutations < 100:
            out.append(Problem("bootstrap/permutations", [self.bootstrap, self.permutations], "must be at least 100",
                               "use e.g. 2000"))
        if not 0 < self.alpha < 1:
            out.append(Problem("alpha", self.alpha, "must be in (0, 1)", "e.g. 0.05"))
        if not 0 <= self.min_effect < 1:
            out.append(Problem("min_effect", self.min_effect, "must be in [0, 1)", "e.g. 0.05 (5 points)"))
        return out
