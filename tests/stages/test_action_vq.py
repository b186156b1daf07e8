from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from common.action_vq.checkpoint import META_FILE, MODEL_FILE, load_tokenizer
from common.config import ParamsError, from_dict
from common.demos import DatasetError
from common.tracking import TrackingParams
from stages.action_vq import CHECKPOINTS, DEMOS, METRICS, MODEL_DIR, Params
from stages.action_vq.__main__ import main
from tests.synthetic import write_moving_square_dataset

OFF = TrackingParams(enabled=False, uri="", experiment="test")
TINY_MODEL = {
    "quantizer": "vq", "steps_per_token": 1, "dim": 32, "heads": 2, "layers": 1, "decoder": "token_mlp",
    "code_dim": 8, "codebook_size": 16, "residual_levels": 1, "fsq_levels": [3, 3, 3], "ema_decay": 0.9,
    "commitment_weight": 0.25, "dead_code_threshold": 1.0, "mask_ratio": 0.15, "mask_weight": 1.0,
}
TINY = {
    "chunk": 4, "val_fraction": 0.1, "normalization": "quantile", "model": TINY_MODEL,
    "train": {"steps": 4, "batch_size": 8, "lr": 0.001, "weight_decay": 0.0, "warmup_steps": 1, "schedule": "constant",
              "grad_clip": 1.0, "precision": "auto", "log_every": 2, "checkpoint_every": 2, "seed": 0},
}


def tiny(**changes: object) -> Params:
    return from_dict(Params, {**TINY, **changes}, prefix="action_vq")


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_tiny_action_vq_writes_its_declared_outputs_and_reloads(tmp_path: Path) -> None:
    write_moving_square_dataset(tmp_path / DEMOS)
    metrics = main(tiny(), OFF, tmp_path)
    checkpoint = f"{CHECKPOINTS.as_posix()}/step_00000004"
    assert files_under(tmp_path) - {DEMOS.as_posix()} == {
        f"{MODEL_DIR.as_posix()}/{MODEL_FILE}", f"{MODEL_DIR.as_posix()}/{META_FILE}", METRICS.as_posix(),
        *(f"{checkpoint}/{f}" for f in ("checkpoint.json", "model.safetensors", "optimizer.bin", "scheduler.bin",
                                         "random_states_0.pkl"))}
    meta = json.loads((tmp_path / MODEL_DIR / META_FILE).read_text())
    assert (meta["chunk"], meta["tokens_per_chunk"], meta["vocab_size"], meta["action_dim"]) == (4, 4, 16, 4)
    assert meta["action_names"] == ["dx", "dy", "dz", "gripper"] and len(meta["normalization_low"]) == 4
    assert set(metrics["per_dimension"]) == {"dx", "dy", "dz", "gripper"}
    for key in ("reconstruction_mse", "reconstruction_max_abs", "code_usage", "perplexity", "tokens_per_chunk"):
        assert key in metrics
    assert 0 < metrics["code_usage"] <= 1 and metrics["scored_steps"] == 2 * (12 * 4 - 6)  # padded steps not scored
    tokenizer, _ = load_tokenizer(tmp_path / MODEL_DIR)
    saved = torch.load(tmp_path / MODEL_DIR / MODEL_FILE, weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in tokenizer.state_dict().items())


def test_fsq_with_temporal_compression_trains(tmp_path: Path) -> None:
    write_moving_square_dataset(tmp_path / DEMOS)
    metrics = main(tiny(model={**TINY_MODEL, "quantizer": "fsq", "steps_per_token": 2, "decoder": "transformer"}),
                   OFF, tmp_path)
    assert (metrics["tokens_per_chunk"], metrics["vocab_size"]) == (2, 27)


def test_chunk_must_be_a_multiple_of_steps_per_token() -> None:
    with pytest.raises(ParamsError, match=r"action_vq.chunk = 5: is not a multiple of model.steps_per_token=2"):
        tiny(chunk=5, model={**TINY_MODEL, "steps_per_token": 2})


def test_missing_dataset_says_to_run_collect(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file.*dvc repro collect"):
        main(tiny(), OFF, tmp_path)
