"""The report's figures (matplotlib, PNG) and its Markdown text."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from common.stats import Interval
from stages.report.analysis import OUT_OF_SCOPE, Comparison

Table = dict[str, dict[str, Interval]]  # strategy -> column (all / suite / category) -> interval over seeds
_PNG_METADATA = {"Software": None}  # no version string: the same numbers give the same bytes


def pct(value: float) -> str:
    """A fraction as percentage points, one decimal ('-' for NaN)."""
    return "-" if math.isnan(value) else f"{100 * value:.1f}"


def interval_text(interval: Interval) -> str:
    """`mean [lo, hi]` in points."""
    return "-" if interval.n == 0 else f"{pct(interval.mean)} [{pct(interval.lo)}, {pct(interval.hi)}]"


def bar_chart(table: Table, columns: list[str], title: str, path: Path) -> None:
    """Grouped bars: one group per column, one bar per strategy, 95% interval whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strategies = list(table)
    width = 0.8 / len(strategies)
    figure, axis = plt.subplots(figsize=(max(6.0, 1.6 * len(columns)), 4.0))
    for i, strategy in enumerate(strategies):
        cells = [table[strategy][c] for c in columns]
        means = np.array([100 * c.mean for c in cells])
        errors = np.array([[100 * (c.mean - c.lo) for c in cells], [100 * (c.hi - c.mean) for c in cells]])
        x = np.arange(len(columns)) + (i - (len(strategies) - 1) / 2) * width
        axis.bar(x, np.nan_to_num(means), width, yerr=np.nan_to_num(errors), capsize=3, label=strategy)
    axis.set_xticks(np.arange(len(columns)), columns)
    axis.set_ylabel("success (%), mean over seeds, 95% CI")
    axis.set_ylim(0, 118)  # room for the legend above 100%
    axis.set_title(title)
    axis.legend(fontsize=8, ncol=min(5, len(strategies)))
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100, metadata=_PNG_METADATA)
    plt.close(figure)


def curve_chart(curves: dict[str, dict[int, dict[str, np.ndarray]]], path: Path) -> None:
    """Training loss against step: one colour per strategy, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.0, 4.0))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (strategy, seeds) in enumerate(curves.items()):
        for j, (seed, curve) in enumerate(sorted(seeds.items())):
            column = "loss" if "loss" in curve else sorted(k for k in curve if k != "step")[0]
            axis.plot(curve["step"], curve[column], color=colours[i % len(colours)], linewidth=1.0,
                      alpha=0.8, label=f"{strategy} ({column})" if j == 0 else None)
    axis.set_xlabel("step")
    axis.set_ylabel("training loss")
    axis.set_yscale("log")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100, metadata=_PNG_METADATA)
    plt.close(figure)


def _scalar_rows(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for key, value in sorted(metrics.items()):
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _scalar_rows(value, f"{name}.")
        elif isinstance(value, bool) or not isinstance(value, (int, float, list)):
            continue
        elif isinstance(value, list):
            if len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
                rows.append((name, f"[{value[0]:.4g}, {value[1]:.4g}]"))
        else:
            rows.append((name, f"{value:.4g}"))
    return rows


def _comparison_rows(comparisons: list[Comparison], with_verdict: bool) -> list[str]:
    head = "| comparison | difference (points) [95% CI] | p | p (Holm) |" + (" verdict |" if with_verdict else "")
    lines = [head, "|" + "---|" * (5 if with_verdict else 4)]
    for c in comparisons:
        if c.result is None:
            lines.append(f"| {c.text} | {c.note} | | |" + (" not tested |" if with_verdict else ""))
            continue
        r = c.result
        diff = f"{100 * r.mean_diff:+.1f} [{100 * r.lo:+.1f}, {100 * r.hi:+.1f}]"
        row = f"| {c.text} | {diff} | {r.p_value:.4f} | {c.p_holm:.4f} |"
        lines.append(row + (f" **{c.verdict}** |" if with_verdict else ""))
    return lines


def markdown(setup: dict[str, Any], by_suite: Table, suites: list[str], by_category: Table, categories: list[str],
             versus_baseline: list[Comparison], claims: list[Comparison], lam: dict[str, Any],
             tokenizer: dict[str, Any], finetune: dict[str, dict[str, float]]) -> str:
    """reports/study.md."""
    lines = ["# Latent-action study: results", "",
             f"Strategies {setup['strategies']} x seeds {setup['seeds']}; {setup['episodes']} evaluation episodes. "
             f"Success is the mean over seeds of each trained policy's success rate, with a {setup['bootstrap']}-"
             "resample bootstrap 95% interval over seeds (with few seeds the interval is coarse: read it as a "
             "floor on the uncertainty). Paired tests match (seed, task, suite) cells: sign-flip permutation test "
             f"on the mean difference (exact up to 15 pairs, else {setup['permutations']} random patterns), "
             f"bootstrap interval of the difference, Holm's correction within each table (alpha {setup['alpha']}).",
             "", "## Success by suite (%)", "",
             "| strategy | " + " | ".join(suites) + " |", "|---|" + "---|" * len(suites)]
    lines += [f"| {s} | " + " | ".join(interval_text(row[c]) for c in suites) + " |" for s, row in by_suite.items()]
    lines += ["", "## Success by task category (%)", "",
              "| strategy | " + " | ".join(categories) + " |", "|---|" + "---|" * len(categories)]
    lines += [f"| {s} | " + " | ".join(interval_text(row[c]) for c in categories) + " |"
              for s, row in by_category.items()]
    lines += ["", "![success by suite](success_by_suite.png)", "",
              "![success by category](success_by_category.png)", "",
              "## Each strategy against the baseline (all episodes)", ""]
    lines += _comparison_rows(versus_baseline, with_verdict=False)
    lines += ["", "## The study's claims", "",
              f"Verdicts: **supported** = Holm-adjusted p < {setup['alpha']} and a gain; **contradicted** = "
              f"significant loss, or the interval rules out a gain of {100 * setup['min_effect']:.0f} points or "
              "more; **inconclusive** = this study lacks the power to tell. Groups of strategies are averaged "
              "within each (seed, task, suite) cell before pairing.", ""]
    lines += _comparison_rows(claims, with_verdict=True)
    lines += ["", f"- {OUT_OF_SCOPE}", "", "## Latent action model (metrics/lam.json)", "",
              "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in _scalar_rows(lam)]
    lines += ["", "## Action tokenizer (metrics/action_vq.json)", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in _scalar_rows(tokenizer)]
    keys = sorted({k for row in finetune.values() for k in row})
    lines += ["", "## Fine-tuning (metrics/finetune, mean over seeds)", "",
              "| strategy | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    lines += [f"| {s} | " + " | ".join(f"{row[k]:.4g}" if k in row else "-" for k in keys) + " |"
              for s, row in finetune.items()]
    lines += ["", "![training curves](training_curves.png)", ""]
    return "\n".join(lines)
