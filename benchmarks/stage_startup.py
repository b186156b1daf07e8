"""Stage start-up: `dvc repro` of one stage with each stage process started afresh, against forked from the launcher.

    python -m benchmarks.stage_startup [--repeats 3] [--stages finetune@baseline-0 evaluate@baseline-0 report]

Builds the smoke project (configs/smoke.yaml, as tests/flows/test_smoke_dag.py does) in a temporary git + DVC
repository and runs it once through the flow (~3.5 min), then times `dvc --wait-for-lock repro -f --single-item
<stage>` for each stage, alternating fresh and forked runs (`--repeats` of each), with the same environment the flow
gives a stage. Prints each stage's median wall time both ways and their ratio. The smoke sizes make each stage's
own work small, so the difference is the start-up the launcher saves (torch, transformers, MLflow imports).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from flows.study import FlowOptions, prefork_launcher, run_study, stage_env
from tests.flows.toy import PROJECT, project_repo


def _repro(root: Path, stage: str, launcher: str | None) -> float:
    """Seconds `dvc repro -f --single-item <stage>` takes, with the environment the flow gives a stage."""
    command = [sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "-f", "--single-item", stage]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=root, env=stage_env(None, launcher), capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"`{' '.join(command[2:])}` failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return elapsed


def main() -> None:
    """Parse the flags, build the smoke repository, time the stages both ways, print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stage_startup", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each stage each way (default: 3)")
    parser.add_argument("--stages", nargs="+", default=["finetune@baseline-0", "evaluate@baseline-0", "report"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stage-startup-") as folder:
        root = project_repo(Path(folder) / "repo", PROJECT / "configs/smoke.yaml")
        start = time.perf_counter()
        run_study(FlowOptions(root=root, targets=(), max_parallel=2, retries=0, retry_delay_s=0, runner="thread",
                              address=None, prefork=True))
        print(f"smoke DAG built through the flow: {time.perf_counter() - start:.0f} s")
        times: dict[tuple[str, str], list[float]] = {}
        with prefork_launcher(root, enabled=True) as launcher:
            if launcher is None:
                raise SystemExit("the launcher is not available on this platform")
            _repro(root, args.stages[0], launcher)  # waits for the launcher's imports; not timed
            for _ in range(args.repeats):
                for stage in args.stages:
                    for way, socket_path in (("fresh", None), ("forked", launcher)):
                        times.setdefault((stage, way), []).append(_repro(root, stage, socket_path))
    print(f"\n`dvc repro -f --single-item STAGE`, median of {args.repeats} (seconds):")
    print(f"{'stage':24s} {'fresh':>8s} {'forked':>8s} {'saved':>8s} {'ratio':>7s}")
    for stage in args.stages:
        fresh, forked = (statistics.median(times[(stage, way)]) for way in ("fresh", "forked"))
        print(f"{stage:24s} {fresh:8.1f} {forked:8.1f} {fresh - forked:8.1f} {forked / fresh:7.2f}")


if __name__ == "__main__":
    main()
