"""How close the trained tokenizer comes to the best any one-token-per-step, per-token decoder can do.

    python -m benchmarks.action_vq [--params params.yaml] [--codes 256 1024] [--seeds 3]

With one token per step and a decoder that reads each token alone (the study's tokenizer), each step's action is
replaced by one of V points: no such tokenizer beats k-means with V centroids fit on the training actions. This
prints, for each V, the k-means floor on held-out episodes (RMSE and mean absolute error as a share of each
dimension's range, code usage), beside the trained tokenizer's figures from metrics/action_vq.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterable

import numpy as np
from scipy.cluster.vq import kmeans2

from common.config import load_section
from common.demos import DemoReader
from common.demos.schema import ACTIONS
from common.normalize import normalize, unnormalize
from stages.action_vq import DEMOS, METRICS, Params


def split_actions(split: str) -> np.ndarray:
    """Every action of one split: (N, A)."""
    with DemoReader(DEMOS) as reader:
        return np.concatenate([reader.group(n)[ACTIONS][()] for n in reader.names
                               if reader.split(n) == split]).astype(np.float32)


def shares(values: Iterable[float]) -> str:
    """Per-dimension shares of the range as percentages."""
    return "[" + ", ".join(f"{100 * float(v):.2f}%" for v in values) + "]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--codes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    params = load_section(args.params, "action_vq", Params)
    with DemoReader(DEMOS) as reader:
        stats = reader.stats("actions")
    train, val = split_actions("train"), split_actions("val")
    span = np.maximum(stats.max - stats.min, 1e-8)
    train_n = normalize(train, stats, params.normalization).astype(np.float64)
    val_n = normalize(val, stats, params.normalization)
    print(f"{len(train)} training steps, {len(val)} held-out steps; ranges {span.tolist()}")
    for codes in args.codes:
        for seed in range(args.seeds):
            centroids, _ = kmeans2(train_n, codes, seed=seed, minit="++", iter=50)
            nearest = ((val_n[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
            error = unnormalize(centroids[nearest].astype(np.float32), stats, params.normalization) - val
            rmse = np.sqrt((error**2).mean(0)) / span
            mae = np.abs(error).mean(0) / span
            print(f"k-means V={codes} seed {seed}: RMSE/range {shares(rmse)}, MAE/range {shares(mae)}, "
                  f"held-out usage {len(np.unique(nearest)) / codes:.3f}")
    if METRICS.is_file():
        metrics = json.loads(METRICS.read_text())
        dims = metrics["per_dimension"]
        print(f"trained tokenizer (V={metrics['vocab_size']}, {metrics['tokens_per_chunk']} tokens per chunk): "
              f"RMSE/range {shares([d['rmse_share_of_range'] for d in dims.values()])}, "
              f"MAE/range {shares([d['mae_share_of_range'] for d in dims.values()])}, "
              f"held-out usage {metrics['code_usage']:.3f}")


if __name__ == "__main__":
    main()
