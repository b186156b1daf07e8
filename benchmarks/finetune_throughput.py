"""VLA finetuning throughput, data wait, peak memory and achieved FLOP/s at the default configuration.

    python -m benchmarks.finetune_throughput [--params params.yaml] [--strategy baseline] [--steps 20]

Builds the default finetune model (params.yaml `finetune`, tiny preset unless configured otherwise) for one
strategy, trains it for a few steps on the collected demonstrations (`dvc repro collect` first; latent
strategies also need `dvc repro extract`), and prints training samples/s, the share of step time spent building
batches, peak memory, and the FLOP/s achieved (FLOPs of one step counted by torch) against this machine's
measured fp32 matmul peak at the same thread count. Other processes on the machine skew the figures: note
`uptime` beside them.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from common.cli import load_stage_params
from common.logs import setup_logging
from common.tracking import StageRun, TrackingParams
from common.train import peak_memory_mb, train
from common.vla.data import Batches
from common.vla.model import VLA, objective
from stages.finetune import Item, Params
from stages.finetune.__main__ import load_strategy_cfg
from stages.finetune.setup import set_up


def matmul_peak(size: int = 1024, seconds: float = 2.0) -> float:
    """Measured fp32 matmul FLOP/s on this machine at the current thread count (best of short bursts)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - start))
    return best


def training_setup(params_path: Path, strategy_name: str) -> tuple[Params, VLA, Batches, Callable]:
    """(finetune params, model, train batches, loss) of `strategy_name`'s default model (seed 0) on the collected
    demos, built by the stage's own set-up (`dvc repro collect` first; latent strategies also `dvc repro extract`)."""
    params, _ = load_stage_params(params_path, "finetune", Params)
    cfg = load_strategy_cfg(params_path, strategy_name)
    setup = set_up(params, Path("."), Item(strategy_name, 0), cfg)
    return setup.params, setup.model, setup.train_batches, objective(cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--strategy", default="baseline")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    setup_logging()
    params, model, batches, loss_fn = training_setup(args.params, args.strategy)
    batch_size = params.train.batch_size
    with FlopCounterMode(display=False) as counter:  # FLOPs of one training step (forward + backward)
        loss, _ = loss_fn(model, batches.sample(0, 0, 0, batch_size))
        loss.backward()
    model.zero_grad(set_to_none=True)
    step_flops = counter.get_total_flops()
    train_params = dataclasses.replace(params.train, steps=args.steps, checkpoint_every=10**9, log_every=10**9)
    with tempfile.TemporaryDirectory() as ckpt, StageRun("bench", {}, TrackingParams(False, "", "b")) as run:
        result = train(model, loss_fn, lambda s, p: batches.sample(0, s, p, batch_size), train_params, Path(ckpt),
                       "bench", run)
    steps_per_second = result.samples_per_second / batch_size
    peak = matmul_peak()
    parameters = sum(p.numel() for p in model.parameters())
    print(f"\n{args.strategy} on {params.backbone.family} ({params.backbone.preset}), {parameters / 1e6:.2f}M "
          f"parameters, batch {batch_size}, {args.steps} steps, {torch.get_num_threads()} thread(s):")
    print(f"  training throughput   {result.samples_per_second:8.1f} samples/s ({1 / steps_per_second:.2f} s/step)")
    print(f"  data wait             {100 * result.data_wait_fraction:8.1f} % of step time")
    print(f"  peak memory           {peak_memory_mb():8.0f} MB (process RSS on a CPU; dataset in memory included)")
    print(f"  FLOPs per step        {step_flops / 1e9:8.2f} GFLOP (forward + backward, torch's counter)")
    print(f"  FLOPs per sample      {step_flops / batch_size / 1e6:8.1f} MFLOP (what a design change moves)")
    print(f"  achieved              {step_flops * steps_per_second / 1e9:8.2f} GFLOP/s")
    print(f"  matmul peak           {peak / 1e9:8.2f} GFLOP/s (fp32 1024^3, same threads) -> "
          f"{100 * step_flops * steps_per_second / peak:.1f}% of peak")


if __name__ == "__main__":
    main()
