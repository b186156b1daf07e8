"""Collection throughput against the raw simulator step+render rate, measured side by side.

    python -m benchmarks.collect_throughput [--params params.yaml] [--tasks T ...] [--demos N] [--repeats 3]

By default: one task of each category from params.yaml's list, with as many episodes per task as the default
study collects (demos_per_task + val_demos_per_task), since building a task's simulator costs about a second
per worker and is amortised over that many episodes. Per repeat, three measurements over the same episodes:
  raw   one process: scripted expert + simulator step + render of every camera, nothing recorded;
  w1    the collect stage with one worker (end to end: worker start-up, recording, HDF5 writing);
  w2    the same with two workers.
Prints medians over repeats and the ratios w1/raw (target >= 0.85) and w2/w1 (target >= 1.7).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from common.config import load_section
from common.logs import setup_logging
from common.simulators import get_simulator, task_info
from common.tracking import TrackingParams
from stages.collect import Params
from stages.collect.__main__ import main as collect_main


def raw_rate(params: Params) -> tuple[float, int]:
    """Frames/s of expert + step + render in this process, over the layouts collect would use."""
    simulator = get_simulator(params.simulator)
    frames, busy = 0, 0.0
    for task in params.tasks:
        sim = simulator.scene(task, tuple(params.cameras), params.image_size)
        for layout_id in range(params.demos_per_task):
            obs = sim.reset(sim.draw_layout(params.seed, "demos", layout_id))
            policy = simulator.expert(task)
            assert policy is not None, f"{simulator.name} has no expert for {task}"
            start = time.perf_counter()
            for _ in range(params.max_episode_steps):
                sim.render()
                obs, success, _ = sim.step(np.clip(policy.get_action(obs), -1, 1))
                frames += 1
                if success:
                    break
            busy += time.perf_counter() - start
        sim.close()
    return frames / busy, frames


def collect_rate(params: Params) -> tuple[float, int]:
    """Frames/s of the whole collect stage (wall clock, start-up included)."""
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        metrics = collect_main(params, TrackingParams(False, "", "bench"), Path(root))
        return metrics["steps"] / (time.perf_counter() - start), metrics["steps"]


def default_tasks(simulator: str, tasks: list[str]) -> list[str]:
    """The first task of each of the simulator's categories (e.g. short, long_horizon, precision) in the list."""
    sim = get_simulator(simulator)
    chosen: list[str] = []
    for category in sim.categories:
        first = next((t for t in tasks if category in task_info(sim, t).categories and t not in chosen), None)
        if first:
            chosen.append(first)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--tasks", nargs="+", help="default: one short, one long-horizon, one precision task")
    parser.add_argument("--demos", type=int, help="episodes per task (default: as many as the study collects)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    setup_logging()
    base = load_section(args.params, "collect", Params)
    tasks = args.tasks or default_tasks(base.simulator, base.tasks)
    demos = args.demos or base.demos_per_task + base.val_demos_per_task
    params = dataclasses.replace(
        base, tasks=tasks, demos_per_task=demos, val_demos_per_task=0, heldout_layouts_per_task=0,
        max_attempts_per_task=2 * demos,
    )
    rates: dict[str, list[float]] = {"raw": [], "w1": [], "w2": []}
    for repeat in range(args.repeats):
        rates["raw"].append(raw_rate(params)[0])
        for workers in (1, 2):
            rate, steps = collect_rate(dataclasses.replace(params, workers=workers))
            rates[f"w{workers}"].append(rate)
        shown = ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items())
        print(f"repeat {repeat}: {shown} frames/s ({steps} frames)")
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\n{params.tasks} x {demos} episodes, {len(params.cameras)} cameras at "
          f"{params.image_size}px, medians of {args.repeats} repeats:")
    print(f"  raw simulator step+render   {med['raw']:7.1f} frames/s")
    one, two = med["w1"] / med["raw"], med["w2"] / med["w1"]
    print(f"  collect, 1 worker           {med['w1']:7.1f} frames/s   {one:.2f} x raw (target >= 0.85)")
    print(f"  collect, 2 workers          {med['w2']:7.1f} frames/s   {two:.2f} x 1 worker (target >= 1.7)")


if __name__ == "__main__":
    main()
