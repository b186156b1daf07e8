"""Success rates with Wilson 95% intervals, per task, per suite and per category."""

from __future__ import annotations

import math
from typing import Any, Iterable

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when there are no trials."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(flags: Iterable[bool]) -> dict[str, Any]:
    """{"n", "successes", "rate", "ci95": [lo, hi]} of a sequence of success flags (rounded for stable files)."""
    flags = list(flags)
    n, k = len(flags), sum(bool(f) for f in flags)
    lo, hi = wilson(k, n)
    return {"n": n, "successes": k, "rate": round(k / n, 6) if n else 0.0, "ci95": [round(lo, 6), round(hi, 6)]}


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The metrics file from per-episode records (the episodes.jsonl objects)."""

    def grouped(key: Any) -> dict[str, dict[str, Any]]:
        groups: dict[str, list[bool]] = {}
        for record in records:
            for name in key(record):
                groups.setdefault(name, []).append(record["success"])
        return {name: rate(flags) for name, flags in sorted(groups.items())}

    steps = [r["steps_to_success"] for r in records if r["success"]]
    return {
        "success": rate(r["success"] for r in records),
        "per_task": grouped(lambda r: [r["task"]]),
        "per_suite": grouped(lambda r: [r["suite"]]),
        "per_category": grouped(lambda r: r["categories"]),
        "per_suite_task": grouped(lambda r: [f"{r['suite']}/{r['task']}"]),
        "per_suite_category": grouped(lambda r: [f"{r['suite']}/{c}" for c in r["categories"]]),
        "failures": {kind: sum(r["failure"] == kind for r in records) for kind in ("timeout", "error")},
        "mean_steps_to_success": round(sum(steps) / len(steps), 3) if steps else None,
    }
