"""The study's shape, stated once in params.yaml's `study` section: the action chunk K, the validation share of a
demo file without splits, and the strategy x seed matrix.

dvc.yaml's finetune and evaluate stages iterate over `study.items` (`foreach: ${study.items}`: one DVC item per
entry, named by its key); the finetune stage, the report and the flow read the same entries through `load_study`.
K and the validation share reach the sections that use them as `shared("study.<key>")` fields (common/config.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable

from common.config import ParamsError, Problem, from_dict, read_yaml, section_of

SECTION = "study"
STRATEGY_SECTION = "strategy_cfg"  # one section per strategy: its loss weights
BASELINE = "baseline"  # the strategy every other one is compared with


@dataclasses.dataclass(frozen=True)
class MatrixItem:
    """One entry of `study.items`: a strategy trained with a seed, and the file its targets come from."""

    strategy: str
    seed: int
    reads: str  # the demos, or extract's latent file the strategy reads (the item's DVC dep)

    @property
    def name(self) -> str:
        """`<strategy>-<seed>`: the item's key, DVC item, output folder, metrics file and MLflow run name."""
        return f"{self.strategy}-{self.seed}"


@dataclasses.dataclass(frozen=True)
class StudyParams:
    """The `study` section."""

    chunk: int  # K actions per chunk: tokenized by action_vq, predicted by every policy
    val_fraction: float  # held out for validation in a demo file that declares no split (common/demos/splits.py)
    items: dict[str, MatrixItem]

    @property
    def strategies(self) -> list[str]:
        """The strategies in the order the items first name them."""
        return list(dict.fromkeys(item.strategy for item in self.items.values()))

    @property
    def seeds(self) -> list[int]:
        """The seeds every strategy is trained with, ascending."""
        return sorted({item.seed for item in self.items.values()})

    def problems(self) -> list[Problem]:
        """Range checks; a full grid, so that every comparison is paired by seed."""
        out = []
        if self.chunk < 1:
            out.append(Problem("chunk", self.chunk, "must be at least 1", "e.g. 8"))
        if not 0 <= self.val_fraction < 1:
            out.append(Problem("val_fraction", self.val_fraction, "must be in [0, 1)", "e.g. 0.1"))
        if not self.items:
            out.append(Problem("items", {}, "must not be empty", "add `baseline-0: {strategy: baseline, seed: 0, "
                                                                 "reads: data/collect/demos.hdf5}`"))
        for key, item in self.items.items():
            if key != item.name:
                out.append(Problem(f"items.{key}", key, f"is not named `<strategy>-<seed>` ({item.name})",
                                   f"rename the key to {item.name}"))
            if item.seed < 0:
                out.append(Problem(f"items.{key}.seed", item.seed, "must not be negative", "use 0 or more"))
        if self.items and BASELINE not in self.strategies:
            out.append(Problem("items", sorted(self.items), f"has no `{BASELINE}` item",
                               "add the baseline: every comparison is against it"))
        present = {(item.strategy, item.seed) for item in self.items.values()}
        missing = [f"{s}-{n}" for s in self.strategies for n in self.seeds if (s, n) not in present]
        if missing:
            out.append(Problem("items", sorted(self.items), f"is not a full strategy x seed grid: {missing} missing",
                               "give every strategy the same seeds (the comparisons are paired by seed)"))
        return out


def strategies_of(section: Any) -> list[str]:
    """The strategies of a raw `study` section, checked (for a `shared("study", strategies_of)` field)."""
    return from_dict(StudyParams, section, SECTION).strategies


def seeds_of(section: Any) -> list[int]:
    """The seeds of a raw `study` section, checked (for a `shared("study", seeds_of)` field)."""
    return from_dict(StudyParams, section, SECTION).seeds


def check_strategies(study: StudyParams, configured: Iterable[str], known: Iterable[str]) -> list[Problem]:
    """Strategy names against the registered strategies (`known`): each item's strategy, and each `strategy_cfg`
    section (`configured`); an item's strategy also needs its section."""
    known, configured = sorted(known), list(configured)
    out = [Problem(f"{STRATEGY_SECTION}.{name}", "{...}", "is not a registered strategy",
                   f"rename or remove the section; registered: {known}") for name in configured if name not in known]
    for key, item in study.items.items():
        if item.strategy not in known:
            out.append(Problem(f"{SECTION}.items.{key}.strategy", item.strategy, "is not a registered strategy",
                               f"use one of {known}"))
        elif item.strategy not in configured:
            out.append(Problem(f"{STRATEGY_SECTION}.{item.strategy}", None, "section is missing",
                               f"add `{STRATEGY_SECTION}: {{{item.strategy}: {{...}}}}` (its loss weights)"))
    return out


def load_study(path: Path, known: Iterable[str] | None = None, data: dict[str, Any] | None = None) -> StudyParams:
    """The `study` section of the params file (`data`: the file, already read); with `known` (the registered strategy
    names), every strategy name in it and in `strategy_cfg` is checked too, all problems reported at once."""
    data = read_yaml(path) if data is None else data
    study = section_of(data, path, SECTION, StudyParams)
    if known is not None:
        configured: Any = data.get(STRATEGY_SECTION) or {}
        problems = check_strategies(study, configured if isinstance(configured, dict) else [], known)
        if problems:
            raise ParamsError(str(path), problems)
    return study
