"""LAM training throughput and peak memory at the default configuration.

    python -m benchmarks.lam_training [--params params.yaml] [--steps 60] [--repeats 3]

Trains the default LAM (params.yaml `lam`) on the collected demonstrations for a few steps per repeat, from
scratch each time, and prints the median training samples/s, the share of step time spent building batches,
and the process's peak resident memory. Needs `dvc repro collect` first.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
from pathlib import Path

import torch

from common.config import load_section
from common.lam.data import FramePairs
from common.lam.model import LatentActionModel
from common.lam.objective import LamWithActionHead, lam_loss
from common.logs import setup_logging
from common.tracking import StageRun, TrackingParams
from common.train import peak_memory_mb, train
from stages.lam import DEMOS, Params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    setup_logging()
    params = load_section(args.params, "lam", Params)
    pairs = FramePairs.load(DEMOS, "train", params.camera, params.gap, params.normalization,
                            val_fraction=params.val_fraction)
    image_size = pairs.image_size
    train_params = dataclasses.replace(params.train, steps=args.steps, checkpoint_every=10**9)
    rates, waits = [], []
    for repeat in range(args.repeats):
        torch.manual_seed(repeat)
        model = LamWithActionHead(LatentActionModel(params.model, image_size), params.gap, 4,
                                  params.action_head_weight, params.action_head_fraction)
        with tempfile.TemporaryDirectory() as ckpt, StageRun("bench", {}, TrackingParams(False, "", "b")) as run:
            batch_at = lambda s, p: pairs.sample(repeat, s, p, params.train.batch_size)  # noqa: E731
            result = train(model, lam_loss, batch_at, train_params, Path(ckpt), f"bench{repeat}", run)
        rates.append(result.samples_per_second)
        waits.append(result.data_wait_fraction)
        wait = 100 * result.data_wait_fraction
        print(f"repeat {repeat}: {result.samples_per_second:.1f} samples/s, data wait {wait:.1f}%")
    parameters = sum(p.numel() for p in model.parameters())
    print(f"\nLAM {parameters / 1e6:.2f}M parameters, batch {params.train.batch_size}, {args.steps} steps, "
          f"{torch.get_num_threads()} threads, medians of {args.repeats}:")
    print(f"  training throughput   {statistics.median(rates):8.1f} samples/s "
          f"({statistics.median(rates) / params.train.batch_size:.2f} steps/s)")
    print(f"  data wait             {100 * statistics.median(waits):8.1f} % of step time")
    print(f"  peak resident memory  {peak_memory_mb():8.0f} MB (dataset frames in memory included)")


if __name__ == "__main__":
    main()
