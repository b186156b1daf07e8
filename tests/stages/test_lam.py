from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from common.cli import StageError
from common.config import from_dict
from common.demos import DatasetError
from common.tracking import TrackingParams
from stages.lam import CHECKPOINTS, DEMOS, META_FILE, METRICS, MODEL_DIR, MODEL_FILE, Params
from stages.lam.__main__ import main
from tests.synthetic import write_moving_square_dataset

REPO = Path(__file__).resolve().parents[2]
OFF = TrackingParams(enabled=False, uri="", experiment="test")
TINY = {
    "val_fraction": 0.1, "camera": "corner", "gap": 2, "normalization": "quantile", "action_head_weight": 0.5,
    "action_head_fraction": 0.25, "threads": 1,
    "model": {"input": "pixels", "dinov2": "", "patch_size": 4, "dim": 32, "heads": 2, "encoder_layers": 1,
              "decoder_layers": 1, "codes_per_transition": 2, "codebook_size": 8, "code_dim": 8,
              "quantizer": "per_query", "code_metric": "cosine", "ema_decay": 0.9, "commitment_weight": 0.25,
              "dead_code_threshold": 2.0},
    "train": {"steps": 4, "batch_size": 8, "lr": 0.001, "weight_decay": 0.0, "warmup_steps": 1, "schedule": "constant",
              "grad_clip": 1.0, "precision": "auto", "log_every": 2, "checkpoint_every": 2, "seed": 0},
    "eval": {"max_pairs": 40, "probe_train_pairs": 60, "probe_steps": 20, "bootstrap": 50},
}


def tiny(**changes: object) -> Params:
    return from_dict(Params, {**TINY, **changes}, prefix="lam")


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_tiny_lam_writes_its_declared_outputs(tmp_path: Path) -> None:
    write_moving_square_dataset(tmp_path / DEMOS)
    metrics = main(tiny(), OFF, tmp_path)
    written = files_under(tmp_path) - {DEMOS.as_posix()}
    checkpoint = f"{CHECKPOINTS.as_posix()}/step_00000004"
    assert written == {f"{MODEL_DIR.as_posix()}/{MODEL_FILE}", f"{MODEL_DIR.as_posix()}/{META_FILE}",
                       METRICS.as_posix(), *(f"{checkpoint}/{f}" for f in (
                           "checkpoint.json", "model.safetensors", "optimizer.bin", "scheduler.bin",
                           "random_states_0.pkl"))}
    meta = yaml.safe_load((tmp_path / MODEL_DIR / META_FILE).read_text())
    assert (meta["gap"], meta["codebook_size"], meta["codes_per_transition"], meta["code_dim"]) == (2, 8, 2, 8)
    assert (meta["camera"], meta["image_size"], meta["input"], meta["action_dim"]) == ("corner", 16, "pixels", 4)
    for key in ("reconstruction_mse", "psnr_db", "controllability_gap", "controllability_gap_ci95", "code_usage",
                "perplexity", "probe_linear_r2_trained", "probe_mlp_r2_trained", "probe_mlp_r2_untrained"):
        assert key in metrics


def test_missing_dataset_says_to_run_collect(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file.*dvc repro collect"):
        main(tiny(), OFF, tmp_path)


def test_gap_longer_than_the_episodes_is_a_clear_error(tmp_path: Path) -> None:
    write_moving_square_dataset(tmp_path / DEMOS, length=6)
    with pytest.raises(DatasetError, match="no 'train' episode is longer than gap=9.*lower lam.gap"):
        main(tiny(gap=9), OFF, tmp_path)
    assert not (tmp_path / MODEL_DIR).exists()


def test_images_smaller_than_a_patch_are_a_clear_error(tmp_path: Path) -> None:
    write_moving_square_dataset(tmp_path / DEMOS, size=16)
    with pytest.raises(StageError, match="smaller than one 32px patch"):
        main(tiny(model={**TINY["model"], "patch_size": 32}), OFF, tmp_path)
    assert not (tmp_path / MODEL_DIR).exists()


def test_unknown_camera_names_the_choices(tmp_path: Path) -> None:
    write_moving_square_dataset(tmp_path / DEMOS)
    with pytest.raises(StageError, match=r"lam.camera = 'top'.*\['corner', 'gripperPOV'\]"):
        main(tiny(camera="top"), OFF, tmp_path)
