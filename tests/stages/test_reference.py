"""The reference stage on a synthetic dataset: exactly its outputs, a loadable policy, exact resume, bad params."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
import yaml

from common.cli import load_stage_params
from common.config import apply_overrides, from_dict
from common.demos import DatasetError
from common.policy import Observation, load_policy
from common.tracking import TrackingParams
from stages.reference import CHECKPOINTS, DEMOS, METRICS, MODEL_DIR, OUTS, PLOTS, Params
from stages.reference.__main__ import main
from tests.synthetic import write_moving_square_dataset

REPO = Path(__file__).resolve().parents[2]
OFF = TrackingParams(enabled=False, uri="", experiment="test")
TINY: dict[str, Any] = {
    "chunk": 4, "val_fraction": 0.1, "cameras": ["corner", "gripperPOV"], "normalization": "quantile", "threads": 1,
    "shift": 2,
    "model": {"widths": [8, 16], "feature_dim": 16, "task_dim": 4, "proprio_hidden": 8, "hidden": 32, "layers": 2},
    "train": {"steps": 4, "batch_size": 4, "lr": 0.001, "weight_decay": 0.0, "warmup_steps": 1, "schedule": "constant",
              "grad_clip": 1.0, "precision": "auto", "log_every": 2, "checkpoint_every": 2, "seed": 0},
    "eval": {"max_samples": 8, "batch_size": 4},
}


def tiny(**changes: Any) -> Params:
    return from_dict(Params, {**TINY, **changes}, prefix="reference")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # main() sets params.threads for the whole process


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The finetune stage tests' synthetic data: 4 train and 2 val episodes of 10 steps, 16 px, 2 cameras."""
    root = tmp_path_factory.mktemp("data")
    write_moving_square_dataset(root / DEMOS, episodes=4, length=10, size=16, val_episodes=2)
    return root


def linked(dataset: Path, root: Path) -> Path:
    (root / DEMOS).parent.mkdir(parents=True, exist_ok=True)
    (root / DEMOS).symlink_to(dataset / DEMOS)
    return root


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_main_writes_exactly_its_outputs_and_a_loadable_policy(dataset: Path, tmp_path: Path) -> None:
    root = linked(dataset, tmp_path)
    metrics = main(tiny(), OFF, root)
    written = {p for p in files_under(root) if not p.startswith(("data/", f"{CHECKPOINTS.as_posix()}/"))}
    assert OUTS == (MODEL_DIR,)
    assert written == {f"{MODEL_DIR.as_posix()}/model.safetensors", f"{MODEL_DIR.as_posix()}/meta.json",
                       METRICS.as_posix(), PLOTS.as_posix()}
    saved = json.loads((root / METRICS).read_text())
    assert saved["val_l1"] == pytest.approx(metrics["val_l1"]) and np.isfinite(saved["val_l1_env_units"])
    assert (saved["train_steps"], saved["train_samples"], saved["val_samples"]) == (4, 40, 8)
    assert "samples_per_second" not in saved  # timings go to MLflow only: the file is reproducible
    curve = (root / PLOTS).read_text().splitlines()
    assert "l1" in curve[0].split(",") and [r.split(",")[0] for r in curve[1:]] == ["2", "4"]
    meta = json.loads((root / MODEL_DIR / "meta.json").read_text())
    assert (meta["policy"], meta["cameras"], meta["image_size"], meta["action_dim"], meta["chunk"]) == (
        "reference", ["corner", "gripperPOV"], 16, 4, 4)
    assert meta["tasks"] == ["square"] and len(meta["action_stats"]["q01"]) == 4 and len(meta["dataset_sha256"]) == 64

    policy = load_policy(root / MODEL_DIR)
    rng = np.random.default_rng(0)
    obs = Observation(images={c: rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8) for c in policy.cameras},
                      proprio=rng.normal(size=(2, 4)).astype(np.float32), instructions=("move the square",) * 2,
                      tasks=("square", "square"), states=np.zeros((2, 39)))
    actions = policy.act(obs)
    assert actions.shape == (2, 4, 4) and np.array_equal(actions, policy.act(obs))


def test_resume_equals_an_uninterrupted_run(dataset: Path, tmp_path: Path) -> None:
    straight, resumed = linked(dataset, tmp_path / "straight"), linked(dataset, tmp_path / "resumed")
    assert main(tiny(), OFF, straight)["resumed_from"] == 0
    main(tiny(train={**TINY["train"], "steps": 2}), OFF, resumed)  # "killed" after 2 steps
    assert main(tiny(), OFF, resumed)["resumed_from"] == 2  # from the step-2 checkpoint
    for path in (MODEL_DIR / "model.safetensors", METRICS, PLOTS):
        assert (straight / path).read_bytes() == (resumed / path).read_bytes(), path


def test_unknown_camera_is_an_error(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"reference.cameras = .*\['behindGripper'\] not in"):
        main(tiny(cameras=["corner", "behindGripper"]), OFF, linked(dataset, tmp_path))


@pytest.mark.parametrize("overrides", [None, "configs/smoke.yaml"])
def test_every_params_file_has_a_valid_reference_section(overrides: str | None, tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    if overrides:
        raw = apply_overrides(raw, yaml.safe_load((REPO / overrides).read_text()), overrides)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    params, _ = load_stage_params(tmp_path / "params.yaml", "reference", Params)
    assert params.chunk == raw["study"]["chunk"] and params.threads == 1
    assert raw["reference"]["cameras"] == list(params.cameras)
