"""Extraction throughput (steps/s) of the trained LAM and tokenizer over the default dataset, by batch size.

    python -m benchmarks.extract_throughput [--batch-sizes 64 256 1024] [--threads 1] [--repeats 3]

Loads models/lam and models/action_vq (run `dvc repro action_vq` first) and every demo of
data/collect/demos.hdf5 into memory once, then times the LAM codes and the action tokens of every step separately
(inference only: no HDF5 reading or writing; the stage's metrics/extract.json has the end-to-end figure). Prints
medians over repeats and the machine's load average, since the CPU may be shared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from common.action_vq.checkpoint import load_tokenizer
from common.demos import DemoReader
from common.latents.lam_model import load_lam
from common.logs import setup_logging
from stages.extract import DEMOS, LAM_DIR, TOKENIZER_DIR
from stages.extract.annotate import action_tokens, lam_codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the stage uses 1)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    setup_logging()
    torch.set_num_threads(args.threads)
    lam, lam_meta = load_lam(LAM_DIR)
    tokenizer, vq_meta = load_tokenizer(TOKENIZER_DIR)
    with DemoReader(DEMOS) as reader:
        stats = reader.stats("actions")
        episodes = [reader.episode(n, cameras=(lam_meta["camera"],)) for n in reader.names]
    frames = [e.images[lam_meta["camera"]] for e in episodes]
    actions = [e.actions for e in episodes]
    steps = sum(e.length for e in episodes)
    print(f"{len(episodes)} demos, {steps} steps; torch threads {args.threads}; load before: {os.getloadavg()}")
    print("batch  lam steps/s  tokenizer steps/s")
    for batch_size in args.batch_sizes:
        lam_rates, vq_rates = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            lam_codes(lam, frames, lam_meta["gap"], batch_size)
            lam_rates.append(steps / (time.perf_counter() - start))
            start = time.perf_counter()
            action_tokens(tokenizer, actions, stats, vq_meta["normalization"], batch_size)
            vq_rates.append(steps / (time.perf_counter() - start))
        print(f"{batch_size:5d}  {statistics.median(lam_rates):11.0f}  {statistics.median(vq_rates):17.0f}")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
