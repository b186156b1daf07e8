"""reports/study.md: headline, legend, method, success tables, comparisons, claims, power, diagnostics."""

from __future__ import annotations

import math
from typing import Any

from common.stats import Interval
from stages.report import BASELINE
from stages.report.analysis import CLAIMS, OUT_OF_SCOPE, REFERENCE_LEGEND, STRATEGY_LEGEND, Comparison
from stages.report.figures import Table
from stages.report.headline import Study, headline, interval_text, not_estimable, pct, signed, zero_width
from stages.report.power import EPISODE_FACTORS, POWER, Power


def is_schedule_value(key: str) -> bool:
    """A learning-rate entry (`lr`, `train_lr`): at the end of a schedule it says nothing about the result."""
    last = key.rsplit(".", 1)[-1]
    return last == "lr" or last.endswith("_lr")


def _scalar_rows(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Flattened numeric entries of a metrics file as (name, value) rows, learning rates left out."""
    rows = []
    for key, value in sorted(metrics.items()):
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _scalar_rows(value, f"{name}.")
        elif is_schedule_value(name) or isinstance(value, bool) or not isinstance(value, (int, float, list)):
            continue
        elif isinstance(value, list):
            if len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
                rows.append((name, f"[{value[0]:.4g}, {value[1]:.4g}]"))
        else:
            rows.append((name, f"{value:.4g}"))
    return rows


def _legend(study: Study) -> list[str]:
    """One line per policy in the tables, then which strategies each claim groups."""
    lines = ["## Strategies and claims", ""]
    for name in [*study.gaps, *study.setup["strategies"]]:
        text = STRATEGY_LEGEND.get(name) or REFERENCE_LEGEND.get(name) or "(no description in the report's legend)"
        kind = " (reference policy: one policy, no training seed)" if name in study.gaps else ""
        lines.append(f"- **{name}**{kind}: {text}")
    lines += ["", "Claims compare groups of strategies (a group's success rates are averaged per seed):", ""]
    for claim in CLAIMS:
        lines.append(f"- *{claim.text}*: {' + '.join(claim.treatment)} vs {' + '.join(claim.reference)}, on "
                     f"{claim.scope.describe()}")
    return lines


def _method(setup: dict[str, Any]) -> list[str]:
    """How to read every number of the report."""
    one_seed = (" With a single seed no test is possible and the intervals hold task and episode noise only, "
                "not training variance." if setup["n_seeds"] < 2 else "")
    return ["## How to read the numbers", "",
            f"The unit of replication is the training seed ({setup['n_seeds']} per strategy): every cell of one seed "
            "comes from the same trained model, so cells are not independent. Success is, per policy, the pooled "
            "rate over its episodes in scope, averaged over seeds. **p-values**: paired t-test on the per-seed "
            "differences (n seeds - 1 degrees of freedom), Holm-corrected within each table (alpha "
            f"{setup['alpha']}). **Intervals** (95%): hierarchical bootstrap, {setup['bootstrap']} resamples "
            "(seeds, then tasks within a seed, then episodes within a task, the same episodes for both sides of a "
            "comparison where every policy ran the same episodes; percentile), which also counts "
            "task-to-task variation. With few seeds it is coarse and can be narrower than the t interval over "
            "seeds (shown beside it for each comparison): read it as a floor on the uncertainty. Reference "
            f"policies have no seed: their intervals cover tasks and episodes only.{one_seed}"]


def _cell(interval: Interval, fmt: Any = pct) -> str:
    """A table cell: `mean [lo, hi]`, or the mean marked with the footnote of `_footnote`."""
    return f"{fmt(interval.mean)} (not estimable, see note)" if zero_width(interval) else interval_text(interval, fmt)


def _footnote(intervals: list[Interval]) -> list[str]:
    """Under a table with zero-width intervals: why none is shown (not certainty)."""
    notes = sorted({not_estimable(i) for i in intervals if zero_width(i)})
    return ["", *(f"- *not estimable*: {n} (zero width is not certainty)." for n in notes)] if notes else []


def _success_table(table: Table, columns: list[str]) -> list[str]:
    """Policy x column of intervals."""
    lines = ["| policy | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {s} | " + " | ".join(_cell(row[c]) for c in columns) + " |" for s, row in table.items()]
    return lines + _footnote([i for row in table.values() for i in row.values()])


def _comparison_rows(comparisons: list[Comparison], with_verdict: bool) -> list[str]:
    """A family of seed-level comparisons as a table."""
    head = ("| comparison | difference (points) [95% CI, hierarchical bootstrap] | t 95% CI | per-seed differences "
            "| p (t, seeds) | p (Holm) |" + (" verdict |" if with_verdict else ""))
    lines, intervals = [head, "|" + "---|" * (7 if with_verdict else 6)], []
    for c in comparisons:
        if c.result is None:
            lines.append(f"| {c.text} | {c.note} | | | | |" + (" not tested |" if with_verdict else ""))
            continue
        r = c.result
        intervals.append(Interval(r.mean_diff, r.lo, r.hi, r.n_seeds))
        t_ci = "n/a" if math.isnan(r.t_lo) else f"[{signed(r.t_lo)}, {signed(r.t_hi)}]"
        seeds = ", ".join(signed(d) for d in r.per_seed)
        p = ("n/a", "n/a") if math.isnan(r.p_value) else (f"{r.p_value:.4f}", f"{c.p_holm:.4f}")
        note = f" ({c.note})" if c.note else ""
        row = f"| {c.text} | {_cell(intervals[-1], signed)}{note} | {t_ci} | {seeds} | {p[0]} | {p[1]} |"
        lines.append(row + (f" **{c.verdict}** |" if with_verdict else ""))
    return lines + _footnote(intervals)


def _mde(value: float | None) -> str:
    """An MDE in points, or n/a."""
    return "n/a" if value is None else f"{100 * value:.0f}"


def _power_rows(powers: list[Power], target: float) -> list[str]:
    """Variance parts, MDE now, seeds for the target, MDE of other designs: one row per comparison."""
    tested = [p for p in powers if p.parts is not None]
    if not tested:
        return ["No comparison tested."]
    designs = sorted({d for p in tested for d in p.designs})
    columns = ["comparison", "per-seed SD (points): observed / training / episodes", "MDE now",
               f"seeds for MDE <= {100 * target:.0f} (" + " / ".join(f"x{k}" for k in EPISODE_FACTORS) + " episodes)",
               *(f"{s} seeds, {k}x episodes" for s, k in designs)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for p in tested:
        assert p.parts is not None
        sd = " / ".join("n/a" if math.isnan(v) else f"{100 * math.sqrt(v):.1f}"
                        for v in (p.parts.observed, p.parts.between, p.parts.within))
        needed = " / ".join("n/a" if p.seeds_for_target.get(k) is None else str(p.seeds_for_target[k])
                            for k in EPISODE_FACTORS)
        cells = [p.text, sd, _mde(p.mde), needed, *(_mde(p.designs.get(d)) for d in designs)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = sorted({p.note for p in tested})
    return lines + [""] + [f"- {p.text}: {p.note}" for p in tested if len(notes) > 1] + (
        [f"- {notes[0]}"] if len(notes) == 1 else [])


def _sampling_text(study: Study) -> str:
    """How the episode-sampling part was computed: paired episode by episode, or per policy."""
    tested = [p for p in study.power_claims + study.power_versus if p.parts is not None]
    if tested and all(p.paired for p in tested):
        return ("every policy ran the same episodes, the same layouts and simulator seeds, so a difference is "
                "paired episode by episode: the variance of the per-episode differences within each cell / its "
                "episodes; an episode that both sides fail or both solve adds nothing")
    return "binomial variance of each cell's rate / its episodes, the policies' episodes taken as independent"


def _power(study: Study) -> list[str]:
    """The Power section."""
    setup = study.setup
    level = study.power_claims[0] if study.power_claims else None
    lines = ["## Power", "",
             f"Minimum detectable effect (MDE, points): the true difference a two-sided paired t-test over seeds "
             f"detects with {100 * POWER:.0f}% power at Holm's strictest level alpha/m (the level the smallest "
             "p-value of a family of m comparisons must clear"
             + (f": {setup['alpha']}/{level.family_size} = {level.alpha_level:.4g} for the claims" if level else "")
             + "): (t(1 - alpha/2m, n-1) + t(0.8, n-1)) x SD / sqrt(n seeds). The per-seed variance of a difference "
             f"is split into episode sampling ({_sampling_text(study)}) and training "
             "(the observed variance over seeds minus the sampling part, floored at 0); a design with k x the "
             "episodes has variance training + episodes / k. MDE now = the study's seeds and episodes "
             f"({setup['n_seeds']} seeds, {setup['episodes_per_policy']} episodes per policy); 'n/a' = not estimable "
             "(fewer than 2 seeds, or no variance at all).", "", "### The study's claims", ""]
    lines += _power_rows(study.power_claims, setup["target_mde"])
    lines += ["", "### Each strategy against the baseline", ""]
    return lines + _power_rows(study.power_versus, setup["target_mde"])


def markdown(study: Study) -> str:
    """reports/study.md."""
    setup = study.setup
    lines = ["# Latent-action study: results", "", *headline(study), "", *_legend(study), "", *_method(setup), "",
             f"Strategies {setup['strategies']} x seeds {setup['seeds']}"
             + (f", references {list(study.gaps)}" if study.gaps else "")
             + f"; {setup['episodes']} evaluation episodes.", "", "## Success by suite (%)", ""]
    lines += _success_table(study.by_suite, study.suites)
    lines += ["", "## Success by task category (%)", ""] + _success_table(study.by_category, study.categories)
    if study.gaps:
        lines += ["", f"## {BASELINE} minus each reference policy (points)", "",
                  "| reference | " + " | ".join(study.suites) + " |", "|---|" + "---|" * len(study.suites)]
        lines += [f"| {ref} | " + " | ".join(_cell(gaps[c], signed) for c in study.suites) + " |"
                  for ref, gaps in study.gaps.items()]
        lines += _footnote([i for gaps in study.gaps.values() for i in gaps.values()])
    lines += ["", "![success by suite](success_by_suite.png)", "",
              "![success by category](success_by_category.png)", "",
              "## Each strategy against the baseline (all episodes)", ""]
    lines += _comparison_rows(study.versus, with_verdict=False)
    lines += ["", "## The study's claims", "",
              f"Verdicts: **supported** = Holm-adjusted p < {setup['alpha']} and a gain; **contradicted** = "
              f"significant loss, or both intervals (bootstrap and t) rule out a gain of "
              f"{100 * setup['min_effect']:.0f} points or more; **inconclusive** = this study lacks the power to "
              "tell (always so when the seed-level test is not estimable).", ""]
    lines += _comparison_rows(study.claims, with_verdict=True)
    lines += ["", f"- {OUT_OF_SCOPE}", "", *_power(study), "", "## Latent action model (metrics/lam.json)", "",
              "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in _scalar_rows(study.lam)]
    lines += ["", "## Action tokenizer (metrics/action_vq.json)", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in _scalar_rows(study.tokenizer)]
    keys = sorted({k for row in study.finetune.values() for k in row if not is_schedule_value(k)})
    lines += ["", "## Fine-tuning (metrics/finetune, mean over seeds)", "",
              "| strategy | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    lines += [f"| {s} | " + " | ".join(f"{row[k]:.4g}" if k in row else "-" for k in keys) + " |"
              for s, row in study.finetune.items()]
    lines += ["", "Training curves: the action L1 (`l1`, normalized actions; comparable across strategies, unlike "
              "their total losses); colour = strategy, line style = seed.", "",
              "![training curves](training_curves.png)", ""]
    return "\n".join(lines)
