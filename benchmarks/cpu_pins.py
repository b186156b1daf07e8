"""The speed cost of pinning the CPU kernels to AVX2 (common/cpu.py): default finetune step time with and without.

    python -m benchmarks.cpu_pins [--repeats 3] [--steps 20] [--strategy baseline]

Builds the default finetune model (params.yaml `finetune`, as benchmarks.finetune_throughput does; `dvc repro
collect` first) in fresh processes, alternating pinned (as every stage runs) and unpinned (`LASD_CPU_PINS=0`: the
kernels of this CPU's own instruction set), because the libraries read the pins once per process. Each process
times its training steps (batch sampling, forward, backward, AdamW) in CPU seconds, which other processes on a
shared machine disturb less than wall time, and reports the median step. Prints each run, the medians and
pinned / unpinned. On a CPU without AVX-512 both are the same kernels and the ratio is noise. ~15 s per process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import cpu

SETTINGS = {"pinned": {}, "unpinned": {cpu.OPT_OUT_ENV: "0"}}
WARMUP_STEPS = 3  # first steps allocate and warm caches


def step_seconds(params_path: Path, strategy_name: str, steps: int) -> dict[str, float | str]:
    """In this process: CPU seconds of each of `steps` training steps of the default finetune model (median)."""
    import torch

    from benchmarks.finetune_throughput import training_setup
    from common.vla.strategies import get_strategy

    if get_strategy(strategy_name).latent != "none":
        sys.exit(f"benchmarks.cpu_pins times strategies without latents (e.g. baseline), not {strategy_name}")
    params, model, batches, loss_fn = training_setup(params_path, strategy_name)
    batch_size = params.train.batch_size
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=params.train.lr)
    seconds = []
    for step in range(WARMUP_STEPS + steps):
        start = time.process_time()
        loss, _ = loss_fn(model, batches.sample(0, step, 0, batch_size))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seconds.append(time.process_time() - start)
    return {"step_s": statistics.median(seconds[WARMUP_STEPS:]), "batch_size": batch_size,
            "capability": cpu.capability_in_force() or "", "threads": torch.get_num_threads()}


def measure(extra_env: dict[str, str], args: argparse.Namespace) -> dict:
    """One fresh process under `extra_env` (this process's own pins left out): its `step_seconds`."""
    env = {**{k: v for k, v in os.environ.items() if k not in cpu.KERNEL_ENV}, **extra_env}
    done = subprocess.run([sys.executable, "-m", "benchmarks.cpu_pins", "--child", "--params", str(args.params),
                           "--strategy", args.strategy, "--steps", str(args.steps)],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"benchmarks.cpu_pins child failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--strategy", default="baseline")
    parser.add_argument("--repeats", type=int, default=3, help="processes per setting, alternating (default: 3)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per process (default: 20)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(step_seconds(args.params, args.strategy, args.steps)))
        return
    runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for repeat in range(args.repeats):
        for name, extra_env in SETTINGS.items():
            run = measure(extra_env, args)
            runs[name].append(run)
            print(f"run {repeat + 1} {name:9s} {run['capability']:7s} {run['step_s'] * 1000:7.1f} ms/step "
                  f"({run['batch_size'] / run['step_s']:6.1f} samples/s, {run['threads']} thread(s))", flush=True)
    median = {name: statistics.median(r["step_s"] for r in rs) for name, rs in runs.items()}
    batch = runs["pinned"][0]["batch_size"]
    print(f"\n{cpu.cpu_model()}, {args.strategy} finetune, median of {args.repeats} processes x {args.steps} steps "
          f"(CPU time; load average {os.getloadavg()[0]:.2f}):")
    for name, seconds in median.items():
        print(f"  {name:9s} {seconds * 1000:7.1f} ms/step  {batch / seconds:6.1f} samples/s")
    print(f"  pinned / unpinned samples/s: {median['unpinned'] / median['pinned']:.3f}")


if __name__ == "__main__":
    main()
