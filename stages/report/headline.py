"""The report's first three lines: the result, the baseline's strength, what the study can resolve."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from common.stats import Interval
from stages.report import BASELINE, SEEN_SUITE
from stages.report.analysis import Comparison
from stages.report.figures import Table
from stages.report.power import POWER, Power, within_share


@dataclasses.dataclass(frozen=True)
class Study:
    """Everything the Markdown report shows (built by main, rendered by `render.markdown`)."""

    setup: dict[str, Any]  # the report's params + counts
    by_suite: Table
    suites: list[str]  # columns: all, then each suite
    by_category: Table
    categories: list[str]
    versus: list[Comparison]
    claims: list[Comparison]
    power_versus: list[Power]
    power_claims: list[Power]
    gaps: dict[str, dict[str, Interval]]  # reference -> column -> baseline minus reference
    lam: dict[str, Any]
    tokenizer: dict[str, Any]
    finetune: dict[str, dict[str, float]]


def pct(value: float) -> str:
    """A fraction as percentage points, one decimal ('-' for NaN)."""
    return "-" if math.isnan(value) else f"{100 * value:.1f}"


def signed(value: float) -> str:
    """A difference in points with its sign."""
    return "-" if math.isnan(value) else f"{100 * value:+.1f}"


def zero_width(interval: Interval) -> bool:
    """Whether the interval has no width (nothing varied: not certainty, an interval that cannot be estimated)."""
    return interval.n > 0 and abs(interval.hi - interval.lo) < 1e-12


def not_estimable(interval: Interval) -> str:
    """Why a zero-width interval is shown without bounds."""
    if interval.n > 1:
        return f"all {interval.n} seeds and their episodes agree: interval not estimable from {interval.n} seeds"
    return "every episode has the same outcome: interval not estimable from one policy's episodes"


def interval_text(interval: Interval, fmt: Any = pct, unit: str = "") -> str:
    """`mean [lo, hi]`, or the mean and why no interval is shown."""
    if interval.n == 0 or math.isnan(interval.mean):
        return "-"
    if zero_width(interval):
        return f"{fmt(interval.mean)}{unit} ({not_estimable(interval)})"
    return f"{fmt(interval.mean)}{unit} [{fmt(interval.lo)}, {fmt(interval.hi)}]"


def _result_line(study: Study) -> str:
    """The best strategy against the baseline, what is significant, the claims' verdicts."""
    tested = [c for c in study.versus if c.result is not None]
    if not tested:
        return f"**Result:** no strategy besides `{BASELINE}` was evaluated; nothing to compare."
    best = max(tested, key=lambda c: c.result.mean_diff if c.result else -math.inf)
    assert best.result is not None
    r = best.result
    difference = Interval(r.mean_diff, r.lo, r.hi, r.n_seeds)
    parts = [not_estimable(difference) if zero_width(difference) else f"95% CI [{signed(r.lo)}, {signed(r.hi)}]"]
    parts += [] if math.isnan(r.t_lo) else [f"t interval over seeds [{signed(r.t_lo)}, {signed(r.t_hi)}]"]
    parts += ["no seed-level test" if math.isnan(best.p_holm or math.nan) else f"Holm p {best.p_holm:.3f}"]
    significant = [c.key for c in tested if c.p_holm is not None and c.p_holm < study.setup["alpha"]]
    verdicts = [c.verdict for c in study.claims if c.verdict]
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in ("supported", "contradicted", "inconclusive"))
    return (f"**Result:** the best strategy, {best.key}, scores {signed(r.mean_diff)} points over the baseline "
            f"({'; '.join(parts)}); significant after Holm: {', '.join(significant) or 'none'}. "
            f"Claims ({len(verdicts)} tested): {counts}.")


def _baseline_line(study: Study) -> str:
    """The baseline's success on seen layouts and its gap to each reference policy."""
    column = SEEN_SUITE if SEEN_SUITE in study.suites else "all"
    where = "on seen layouts" if column == SEEN_SUITE else "over all episodes"
    base = study.by_suite[BASELINE][column]
    seeds = f"mean of {base.n} seeds" if base.n > 1 else "1 seed"
    text = f"**Baseline:** {interval_text(base, unit='%')} success {where} ({seeds})"
    for reference, gaps in study.gaps.items():
        text += (f"; {reference} {pct(study.by_suite[reference][column].mean)}%: baseline minus {reference} "
                 f"{interval_text(gaps[column], signed, ' points')}")
    return text + "."


def _power_line(study: Study) -> str:
    """The claims' MDE range, the seeds the target MDE needs, and whether episodes or seeds limit it."""
    powers = [p for p in study.power_claims if p.parts is not None]
    subject = "the claims'"
    if not powers:
        powers, subject = [p for p in study.power_versus if p.parts is not None], "the comparisons'"
    n_seeds, episodes = study.setup["n_seeds"], study.setup["episodes_per_policy"]
    mdes = [p.mde for p in powers if p.mde is not None]
    if not powers:
        return "**Power:** no comparison was tested."
    if not mdes:
        return f"**Power:** {powers[0].note}; the study cannot say which differences it would detect."
    needed = [p.seeds_for_target.get(1) for p in powers if p.mde is not None]
    shown = [n for n in needed if n is not None]
    seeds = (f"{min(shown)}-{max(shown)}" if len(set(shown)) > 1 else f"{shown[0]}") if shown else "more than 10000"
    shares = [within_share(p.parts) for p in powers if p.parts is not None and p.mde is not None]
    why = ("most of the per-seed variance is episode sampling: more episodes per policy would help"
           if sum(s >= 0.5 for s in shares) * 2 > len(shares) else
           "most of the per-seed variance is training (between seeds): only more seeds help")
    level, m = powers[0].alpha_level, powers[0].family_size
    return (f"**Power:** with {n_seeds} seeds x {episodes} episodes per policy {subject} minimum detectable effects "
            f"are {_span(mdes)} points ({100 * POWER:.0f}% power, two-sided t-test over seeds at Holm's strictest "
            f"level {study.setup['alpha']}/{m} = {level:.4g}): smaller true differences cannot be resolved; an MDE of "
            f"{100 * study.setup['target_mde']:.0f} points needs {seeds} seeds; {why}.")


def _span(values: list[float]) -> str:
    """A range of fractions in points ('12' or '12-30')."""
    lo, hi = 100 * min(values), 100 * max(values)
    return f"{lo:.0f}" if round(lo) == round(hi) else f"{lo:.0f}-{hi:.0f}"


def headline(study: Study) -> list[str]:
    """Three lines: the result; the baseline's strength (and gaps to the references); what the study resolves."""
    return [_result_line(study), "", _baseline_line(study), "", _power_line(study)]
