"""The report's figures (matplotlib, PNG): success bars with intervals, training curves of the action L1."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.stats import Interval
from stages.report import CURVE_COLUMN

Table = dict[str, dict[str, Interval]]  # policy -> column (all / suite / category) -> interval over seeds
_PNG_METADATA = {"Software": None}  # no version string: the same numbers give the same bytes
_SEED_STYLES = ("-", "--", ":", "-.")


def _pyplot():  # type: ignore[no-untyped-def]
    """matplotlib's pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(table: Table, columns: list[str], title: str, path: Path, references: list[str]) -> None:
    """Grouped bars, one group per column and one bar per policy, with 95% interval whiskers."""
    # Reference policies in hatched greys; strategies in the colours the training curves give them.
    plt = _pyplot()
    policies = list(table)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    strategies = [p for p in policies if p not in references]
    width = 0.8 / len(policies)
    figure, axis = plt.subplots(figsize=(max(6.0, 1.6 * len(columns)), 4.0))
    for i, policy in enumerate(policies):
        cells = [table[policy][c] for c in columns]
        means = np.array([100 * c.mean for c in cells])
        errors = np.array([[100 * (c.mean - c.lo) for c in cells], [100 * (c.hi - c.mean) for c in cells]])
        x = np.arange(len(columns)) + (i - (len(policies) - 1) / 2) * width
        if policy in references:
            style = {"color": str(0.45 + 0.3 * references.index(policy) / max(1, len(references))), "hatch": "//"}
        else:
            style = {"color": colours[strategies.index(policy) % len(colours)]}
        axis.bar(x, np.nan_to_num(means), width, yerr=np.nan_to_num(errors), capsize=3, label=policy, **style)
    axis.set_xticks(np.arange(len(columns)), columns)
    axis.set_ylabel("success (%), mean over seeds, 95% CI", fontsize=9)
    axis.set_ylim(0, 118)  # room for the legend above 100%
    axis.set_title(title)
    axis.legend(fontsize=8, ncol=min(4, len(policies)))
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100, metadata=_PNG_METADATA)
    plt.close(figure)


def curve_chart(curves: dict[str, dict[int, dict[str, np.ndarray]]], path: Path, reference: str) -> None:
    """Training action L1 against step: a panel per strategy in its colour, a line style per seed."""
    # The `reference` strategy's mean over seeds, in grey, in every other panel: the yardstick at a glance.
    plt = _pyplot()
    from matplotlib.lines import Line2D

    strategies = list(curves)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    seeds = sorted({seed for runs in curves.values() for seed in runs})
    columns = min(3, len(strategies))
    rows = -(-len(strategies) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 2.8 * rows), sharex=True, sharey=True,
                                squeeze=False)
    mean = _mean_curve(curves[reference]) if reference in curves else None
    for i, (axis, strategy) in enumerate(zip(axes.flat, strategies)):
        if mean is not None and strategy != reference:
            axis.plot(*mean, color="0.6", linewidth=1.2, label=f"{reference} (mean)")
        for seed, curve in sorted(curves[strategy].items()):
            axis.plot(curve["step"], curve[CURVE_COLUMN], color=colours[i % len(colours)], linewidth=1.0,
                      linestyle=_SEED_STYLES[seeds.index(seed) % len(_SEED_STYLES)])
        axis.set_title(strategy, fontsize=9, color=colours[i % len(colours)])
        axis.grid(alpha=0.3)
    for axis in axes.flat[len(strategies):]:
        axis.set_visible(False)
    for axis in axes[:, 0]:
        axis.set_ylabel(f"action L1 (`{CURVE_COLUMN}`)", fontsize=8)
    for axis in axes[-1]:
        axis.set_xlabel("step", fontsize=8)
    keys = [Line2D([], [], color="black", linestyle=_SEED_STYLES[j % len(_SEED_STYLES)], label=f"seed {s}")
            for j, s in enumerate(seeds)] + ([Line2D([], [], color="0.6", label=f"{reference}, mean of seeds")]
                                             if mean is not None else [])
    figure.legend(handles=keys, loc="lower center", ncol=len(keys), fontsize=8, frameon=False)
    figure.suptitle("Training action L1 (normalized actions; comparable across strategies)", fontsize=10)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    figure.savefig(path, format="png", dpi=100, metadata=_PNG_METADATA)
    plt.close(figure)


def _mean_curve(runs: dict[int, dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds of the action L1 at the steps every seed logged."""
    steps = sorted(set.intersection(*(set(curve["step"].tolist()) for curve in runs.values())))
    values = [np.array([dict(zip(c["step"].tolist(), c[CURVE_COLUMN].tolist()))[s] for s in steps])
              for c in runs.values()]
    return np.array(steps), np.mean(values, axis=0)
