"""What each comparison can resolve: the per-seed variance split into training and episode sampling, the minimum
detectable effect (MDE) now and for other (seeds, episodes) designs, and the seeds a target MDE needs.

The test the MDE is for is the report's own: a two-sided paired t-test over seeds, at Holm's strictest level
alpha / m for the m tested comparisons of a family (the level its smallest p-value must clear).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from common.stats import (
    VarianceParts,
    minimum_detectable_effect,
    paired_outcomes,
    sampling_variance,
    seed_values,
    seeds_needed,
    variance_parts,
)
from stages.report.analysis import Comparison

POWER = 0.80  # the MDE is the true difference detected with this probability
ALTERNATIVE_SEEDS = (3, 5, 8)  # designs the power table shows, beside the study's own number of seeds
EPISODE_FACTORS = (1, 2)  # x the study's episodes per cell


@dataclasses.dataclass(frozen=True)
class Power:
    """One comparison's power: variance parts, MDE now, seeds for the target MDE, MDE of other designs."""

    key: str
    text: str
    n_seeds: int
    family_size: int  # m: tested comparisons of the family
    alpha_level: float  # alpha / m
    parts: VarianceParts | None  # None: not tested
    mde: float | None  # at the study's seeds and episodes; None: undefined (see note)
    seeds_for_target: dict[int, int | None]  # episode factor -> seeds for MDE <= target (None: undefined/too many)
    designs: dict[tuple[int, int], float | None]  # (seeds, episode factor) -> MDE
    note: str
    paired: bool = False  # episode sampling from episode-by-episode differences (common.stats.paired_outcomes)


def design_variance(parts: VarianceParts, episode_factor: float) -> float:
    """Variance of one seed's difference with `episode_factor` x the episodes: between + within / factor."""
    return parts.between + parts.within / episode_factor


def power_of(comparisons: list[Comparison], alpha: float, target: float, n_seeds: int) -> list[Power]:
    """Power of every comparison of one family (Holm's m = the tested ones)."""
    tested = [c for c in comparisons if c.contrast is not None]
    level = alpha / max(1, len(tested))
    seeds = sorted({*ALTERNATIVE_SEEDS, n_seeds})
    out = []
    for c in comparisons:
        if c.contrast is None:
            out.append(Power(c.key, c.text, n_seeds, len(tested), level, None, None, {}, {}, c.note))
            continue
        parts = variance_parts(seed_values(c.contrast.arms), sampling_variance(c.contrast.arms))
        paired = paired_outcomes(c.contrast.arms) is not None
        if n_seeds < 2:
            note = (f"{n_seeds} seed: the between-seed (training) variance, hence the MDE, is not estimable; "
                    "run at least 2 seeds")
            out.append(Power(c.key, c.text, n_seeds, len(tested), level, parts, None, {}, {}, note, paired))
            continue
        if not design_variance(parts, 1) > 0:
            note = "no variance observed (every seed and episode agree): MDE not estimable"
            out.append(Power(c.key, c.text, n_seeds, len(tested), level, parts, None, {}, {}, note, paired))
            continue
        mde = minimum_detectable_effect(design_variance(parts, 1), n_seeds, level, POWER)
        needed = {k: seeds_needed(design_variance(parts, k), target, level, POWER) for k in EPISODE_FACTORS}
        designs = {(s, k): minimum_detectable_effect(design_variance(parts, k), s, level, POWER)
                   for s in seeds for k in EPISODE_FACTORS}
        out.append(Power(c.key, c.text, n_seeds, len(tested), level, parts, mde, needed, designs, advice(parts),
                         paired))
    return out


def within_share(parts: VarianceParts) -> float:
    """Share of one seed's difference variance that is episode sampling (the rest: training)."""
    total = design_variance(parts, 1)
    return parts.within / total if total > 0 else float("nan")


def advice(parts: VarianceParts) -> str:
    """More episodes, or more seeds? From the share of episode sampling in the per-seed variance."""
    share = within_share(parts)
    if share >= 0.5:
        return (f"episode sampling is {100 * share:.0f}% of the per-seed variance: more episodes per policy help "
                "(and cost no training); more seeds help too")
    return (f"training (between seeds) is {100 * (1 - share):.0f}% of the per-seed variance: more seeds help, "
            "more episodes barely")


def power_summary(powers: list[Power], target: float) -> dict[str, dict[str, object]]:
    """metrics/report.json's `power`: per comparison, the numbers behind the report's Power section."""
    def one(p: Power) -> dict[str, object]:
        parts = None if p.parts is None else {k: _finite(v) for k, v in dataclasses.asdict(p.parts).items()}
        return {"n_seeds": p.n_seeds, "family_size": p.family_size, "alpha_level": p.alpha_level, "power": POWER,
                "episodes_paired": p.paired, "variance": parts, "mde": p.mde, "target_mde": target,
                "seeds_for_target_mde": {f"episodes_x{k}": v for k, v in p.seeds_for_target.items()},
                "mde_designs": {f"seeds_{s}_episodes_x{k}": v for (s, k), v in p.designs.items()}, "note": p.note}
    return {p.key: one(p) for p in powers}


def _finite(value: float) -> float | None:
    """NaN as null in JSON."""
    return None if np.isnan(value) else float(value)
