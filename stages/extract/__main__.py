"""Run the `extract` stage: `python -m stages.extract [--params params.yaml]`."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.action_vq.checkpoint import MODEL_FILE, load_tokenizer, read_meta
from common.action_vq.checkpoint import REQUIRED_META as TOKENIZER_REQUIRED
from common.atomic import write_json
from common.cli import StageError, run_stage
from common.config import to_dict
from common.demos import DatasetMeta, DemoReader, Stats, validate_file
from common.latents import ACTION_VQ, LAM, validate_sidecar, write_sidecar
from common.latents.lam_model import REQUIRED_META as LAM_REQUIRED
from common.latents.lam_model import load_lam
from common.normalize import bounds
from common.provenance import code_fingerprint, file_sha256
from common.tracking import StageRun, TrackingParams
from stages.extract import (
    ACTION_TOKENS,
    DEMOS,
    LAM_CODE,
    LAM_CODES,
    LAM_DIR,
    METRICS,
    STAGE,
    TOKENIZER_DIR,
    TOKENS_CODE,
    Params,
)
from stages.extract.annotate import LAM_PADDING, action_tokens, lam_codes

log = logging.getLogger(__name__)


def check_models(data: DatasetMeta, stats: Stats, lam_meta: dict, vq_meta: dict) -> None:
    """The models must fit the dataset: the LAM's camera and image size, the tokenizer's action space."""
    problems = []
    if lam_meta["camera"] not in data.cameras or lam_meta["image_size"] != data.image_size[0]:
        problems.append(f"{LAM_DIR}/meta.json: camera {lam_meta['camera']!r} at {lam_meta['image_size']}px, but the "
                        f"dataset has cameras {list(data.cameras)} at {data.image_size[0]}px")
    if vq_meta["action_dim"] != data.action_space.dim:
        problems.append(f"{TOKENIZER_DIR}/meta.json: action_dim = {vq_meta['action_dim']}, but the dataset's actions "
                        f"are {data.action_space.dim}-D")
    else:
        low, high = bounds(stats, vq_meta["normalization"])
        if not (np.allclose(low, vq_meta["normalization_low"], atol=1e-6)
                and np.allclose(high, vq_meta["normalization_high"], atol=1e-6)):
            problems.append(f"{TOKENIZER_DIR}/meta.json: normalization_low/high {vq_meta['normalization_low']}/"
                            f"{vq_meta['normalization_high']} ({vq_meta['normalization']}) differ from the dataset's "
                            f"{low.tolist()}/{high.tolist()}")
    if problems:
        raise StageError("the models do not fit the dataset:\n  - " + "\n  - ".join(problems)
                         + "\nNext step: retrain them on this dataset (`dvc repro lam action_vq`)")


def sidecar_meta(kind: str, dataset_hash: str, model_dir: Path, code: tuple[str, ...], sizes: dict) -> dict[str, Any]:
    """The root `meta` attribute of one sidecar."""
    return {"kind": kind, "dataset_sha256": dataset_hash, "model_sha256": file_sha256(model_dir / MODEL_FILE),
            "code_version": code_fingerprint(*code), **sizes}


def main(params: Params, tracking: TrackingParams, root: Path = Path(".")) -> dict[str, Any]:
    """Annotate every demo with LAM codes and action tokens; write and validate both sidecars."""
    started = time.perf_counter()
    demos = root / DEMOS
    data = validate_file(demos)
    lam_meta = read_meta(root / LAM_DIR, LAM_REQUIRED, "lam")
    with DemoReader(demos) as reader:
        stats = reader.stats("actions")
        check_models(data, stats, lam_meta, read_meta(root / TOKENIZER_DIR, TOKENIZER_REQUIRED, "action_vq"))
        names = reader.names
        episodes = [reader.episode(n, cameras=(lam_meta["camera"],)) for n in names]
    frames = [e.images[lam_meta["camera"]] for e in episodes]
    actions = [e.actions for e in episodes]
    lengths = {n: e.length for n, e in zip(names, episodes)}
    torch.set_num_threads(1)  # small models: a second thread mostly spin-waits; fixed for reproducible bytes
    lam, lam_meta = load_lam(root / LAM_DIR)
    tokenizer, vq_meta = load_tokenizer(root / TOKENIZER_DIR)
    dataset_hash = file_sha256(demos)
    for name, meta in (("lam", lam_meta), ("action_vq", vq_meta)):
        if meta.get("dataset_sha256") != dataset_hash:  # allowed (e.g. a LIBERO file), but worth a look
            log.warning("models/%s was trained on another dataset (sha256 %s) than %s", name,
                        meta.get("dataset_sha256"), demos)

    with StageRun(STAGE, to_dict(params), tracking, root) as run:
        clock = time.perf_counter()
        codes = lam_codes(lam, frames, lam_meta["gap"], params.batch_size)
        lam_seconds, clock = time.perf_counter() - clock, time.perf_counter()
        tokens = action_tokens(tokenizer, actions, stats, vq_meta["normalization"], params.batch_size)
        vq_seconds = time.perf_counter() - clock
        lam_sizes = {k: lam_meta[k] for k in ("gap", "codebook_size", "codes_per_transition", "code_dim", "camera")}
        vq_sizes = {k: vq_meta[k] for k in ("chunk", "tokens_per_chunk", "vocab_size", "action_dim", "normalization",
                                            "normalization_low", "normalization_high")}
        outputs = (
            (LAM_CODES, LAM, sidecar_meta(LAM, dataset_hash, root / LAM_DIR, LAM_CODE,
                                          {**lam_sizes, "padding": LAM_PADDING}), codes),
            (ACTION_TOKENS, ACTION_VQ, sidecar_meta(ACTION_VQ, dataset_hash, root / TOKENIZER_DIR, TOKENS_CODE,
                                                    {**vq_sizes, "padding": vq_meta["padding"]}), tokens),
        )
        for path, kind, meta, arrays in outputs:
            write_sidecar(root / path, meta, ((n, lengths[n], a) for n, a in zip(names, arrays)))
            validate_sidecar(root / path, kind, lengths)
        steps = sum(lengths.values())
        metrics = {
            "demos": len(names), "steps": steps,
            "lam_padded_steps": int(sum(c["pad"].sum() for c in codes)),
            "chunk_padded_steps": int(sum(t["pad"].sum() for t in tokens)),
            "batch_size": params.batch_size,
        }
        # Throughput differs from run to run: MLflow only, so the metrics file (and its hash in dvc.lock) is
        # reproducible.
        speed = {"lam_steps_per_second": steps / lam_seconds, "action_vq_steps_per_second": steps / vq_seconds,
                 "end_to_end_steps_per_second": steps / (time.perf_counter() - started)}
        write_json(root / METRICS, metrics)
        run.log_metrics({**metrics, **speed})
        run.set_tags({"dataset.sha256": dataset_hash})
    log.info("extract: %d demos, %d steps; LAM %.0f steps/s, tokenizer %.0f steps/s", len(names), steps,
             speed["lam_steps_per_second"], speed["action_vq_steps_per_second"])
    return {**metrics, **speed}


if __name__ == "__main__":
    run_stage(STAGE, Params, main)
