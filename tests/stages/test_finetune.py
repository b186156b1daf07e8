"""The finetune stage on a synthetic dataset: every strategy end to end, resume, outputs, mismatches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.cli import StageError, load_stage_params
from common.config import ParamsError, from_dict
from common.demos import DatasetError, DemoReader
from common.latents import write_sidecar
from common.policy import Observation, load_policy
from common.provenance import file_sha256
from common.tracking import TrackingParams
from common.vla.strategies import get_strategy
from stages.finetune import ACTION_TOKENS, DEMOS, LAM_CODES, Item, Params, outputs
from stages.finetune.__main__ import load_strategy_cfg, main
from tests.synthetic import write_moving_square_dataset

REPO = Path(__file__).resolve().parents[2]
OFF = TrackingParams(enabled=False, uri="", experiment="test")
TINY: dict[str, Any] = {
    "chunk": 4, "val_fraction": 0.1, "cameras": ["corner", "gripperPOV"], "normalization": "quantile", "threads": 1,
    "placeholders_per_step": 2,
    "backbone": {"family": "qwen3_vl", "preset": "tiny", "pretrained": "", "input_size": 0,
                 "tiny": {"hidden": 32, "layers": 2, "heads": 2, "kv_heads": 1, "intermediate": 64,
                          "vision_hidden": 32, "vision_layers": 1, "vision_heads": 2, "patch_size": 4,
                          "vocab_size": 300, "temporal_patch_size": 1, "stem": [8, 16]},
                 "lora": {"rank": 0, "alpha": 16.0, "dropout": 0.0, "targets": "all-linear"}},
    "vision_encoder": "trained",
    "head": {"depth": 0, "dim": 32, "heads": 2, "query_noise": 0.02},
    "augment": {"crop_scale": 0.9, "brightness": 0.1, "contrast": 0.1, "saturation": 0.1},
    "train": {"steps": 4, "batch_size": 4, "lr": 0.001, "weight_decay": 0.0, "warmup_steps": 1, "schedule": "constant",
              "grad_clip": 1.0, "precision": "auto", "log_every": 2, "checkpoint_every": 2, "seed": 0},
    "grad_accum": 1, "eval": {"max_samples": 8, "batch_size": 4},
}
CFG = {"baseline": {"action_weight": 1.0}, "la_align": {"action_weight": 1.0, "align_weight": 0.5, "align_hidden": 16},
       "la_direct": {"action_weight": 1.0, "token_weight": 1.0}, "la_cond": {"action_weight": 1.0, "token_weight": 1.0},
       "la_tok": {"action_weight": 1.0, "token_weight": 1.0}}
CODES, CODEBOOK, CODE_DIM, VOCAB = 2, 8, 6, 16


def tiny(**changes: Any) -> Params:
    return from_dict(Params, {**TINY, **changes}, prefix="finetune")


def cfg(strategy: str) -> Any:
    return from_dict(get_strategy(strategy).cfg, CFG[strategy], prefix=f"strategy_cfg.{strategy}")


def write_latents(root: Path, chunk: int = 4, dataset_sha256: str | None = None, levels: int = 1) -> None:
    """Both sidecars, following the contract, with codes that depend on the demo's actions."""
    demos = root / DEMOS
    sha = dataset_sha256 or file_sha256(demos)
    with DemoReader(demos) as reader:
        episodes = {n: reader.episode(n, cameras=()).actions for n in reader.names}
    lam_meta = {"kind": "lam", "dataset_sha256": sha, "model_sha256": "0" * 64, "gap": 2, "codebook_size": CODEBOOK,
                "codes_per_transition": CODES, "code_dim": CODE_DIM, "camera": "corner", "padding": "last frame",
                "code_version": "test"}
    vq_meta = {"kind": "action_vq", "dataset_sha256": sha, "model_sha256": "0" * 64, "chunk": chunk,
               "tokens_per_chunk": chunk * levels, "vocab_size": VOCAB, "action_dim": 4, "normalization": "quantile",
               "padding": "repeat last", "code_version": "test"}
    rng = np.random.default_rng(0)
    lam, vq = [], []
    for name, actions in episodes.items():
        steps = len(actions)
        direction = (actions[:, 0] > 0).astype(np.int32) * 2 + (actions[:, 1] > 0).astype(np.int32)
        lam.append((name, steps, {"codes": np.stack([direction, (direction + 1) % CODEBOOK], 1).astype(np.int32),
                                  "vectors": rng.normal(size=(steps, CODES, CODE_DIM)).astype(np.float32),
                                  "pad": np.zeros(steps, bool)}))
        ahead = np.arange(steps)[:, None] + np.arange(chunk)
        tokens = direction[np.minimum(ahead, steps - 1)]  # residual levels: a step's codes adjacent
        tokens = np.stack([tokens + VOCAB // 2 * level for level in range(levels)], -1).reshape(steps, -1)
        vq.append((name, steps, {"tokens": tokens.astype(np.int32), "pad": ahead >= steps}))
    (root / LAM_CODES).parent.mkdir(parents=True, exist_ok=True)
    write_sidecar(root / LAM_CODES, lam_meta, lam)
    write_sidecar(root / ACTION_TOKENS, vq_meta, vq)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_moving_square_dataset(root / DEMOS, episodes=4, length=10, size=16, val_episodes=2)
    write_latents(root)
    return root


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def link(dataset: Path, root: Path, *paths: Path) -> Path:
    """A fresh root with symlinks to the shared dataset's files."""
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).symlink_to(dataset / path)
    return root


@pytest.mark.parametrize("strategy", ["baseline", "la_cond", "la_tok"])
def test_strategy_trains_and_writes_exactly_its_outputs(dataset: Path, tmp_path: Path, strategy: str) -> None:
    # The baseline gets no latent files at all: it must not need them.
    latents = () if strategy == "baseline" else (LAM_CODES, ACTION_TOKENS)
    root = link(dataset, tmp_path, DEMOS, *latents)
    item = Item(strategy, 0)
    metrics = main(tiny(), OFF, root, item, cfg(strategy))
    model_dir, metrics_path, plots_path = outputs(item)
    checkpoint = f"checkpoints/finetune/{item.name}"
    written = {p for p in files_under(root) if not p.startswith(("data/", checkpoint))}
    in_model = {p for p in written if p.startswith(f"{model_dir.as_posix()}/")}
    assert written - in_model == {metrics_path.as_posix(), plots_path.as_posix()}
    assert {p.name for p in (root / model_dir).iterdir()} == {"model.safetensors", "meta.json", "tokenizer",
                                                              "processor", "backbone_config"}
    assert json.loads((root / metrics_path).read_text())["val_l1"] == pytest.approx(metrics["val_l1"])
    assert ("val_token_acc" in metrics) == (strategy != "baseline")
    curve = (root / plots_path).read_text().splitlines()
    assert curve[0].startswith("step,") and [r.split(",")[0] for r in curve[1:]] == ["2", "4"]
    meta = json.loads((root / model_dir / "meta.json").read_text())
    assert (meta["policy"], meta["strategy"], meta["seed"]) == ("vla", strategy, 0)
    assert (meta["cameras"], meta["image_size"], meta["action_dim"], meta["chunk"]) == (
        ["corner", "gripperPOV"], 16, 4, 4)
    spec = meta["spec"]
    assert (spec["chunk"], spec["cameras"], spec["image_size"], spec["action_dim"]) == (
        4, ["corner", "gripperPOV"], 16, 4)
    assert spec["backbone"]["family"] == "qwen3_vl" and len(meta["action_stats"]["q01"]) == 4
    expected_vocab = {"baseline": 0, "la_cond": CODEBOOK, "la_tok": VOCAB}[strategy]
    assert len(meta["vocabulary"]) == 1 + expected_vocab  # the placeholder + the latent tokens


def test_the_mlflow_run_records_its_lineage_and_logs_its_metrics_and_curve(dataset: Path, tmp_path: Path) -> None:
    import mlflow

    from common.dvc_graph import dvc_md5
    from common.lineage import ARTIFACT, DEP_TAG, OUT_TAG, recorded
    from common.study_runs import stage_runs
    from common.tracking import resolve_tracking_uri

    root = link(dataset, tmp_path, DEMOS)
    for name in ("dvc.yaml", "params.yaml"):  # the study's own DAG: the run finds its entry there
        (root / name).write_text((REPO / name).read_text())
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True,
                   env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    tracking = TrackingParams(enabled=True, uri="", experiment="finetune-test")
    item = Item("baseline", 0)
    main(tiny(), tracking, root, item, cfg("baseline"))
    [run] = stage_runs(tracking, root, f"finetune@{item.name}")
    client = mlflow.MlflowClient(resolve_tracking_uri(tracking, root))
    model_dir, metrics_path, plots_path = outputs(item)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {metrics_path.name, plots_path.name, ARTIFACT}
    saved = Path(client.download_artifacts(run.info.run_id, metrics_path.name, str(tmp_path / "artifacts")))
    assert saved.read_bytes() == (root / metrics_path).read_bytes()
    outs = recorded(run.data.tags, OUT_TAG)
    assert outs == {p.as_posix(): dvc_md5(root / p) for p in (model_dir, metrics_path, plots_path)}
    assert outs[model_dir.as_posix()].endswith(".dir")
    deps = recorded(run.data.tags, DEP_TAG)
    assert deps[DEMOS.as_posix()] == dvc_md5(root / DEMOS) and deps["stages/finetune"] == "missing"  # not copied


def test_la_tok_takes_a_residual_tokenizer_with_two_tokens_per_step(dataset: Path, tmp_path: Path) -> None:
    root = link(dataset, tmp_path, DEMOS)
    write_latents(root, levels=2)
    metrics = main(tiny(), OFF, root, Item("la_tok", 0), cfg("la_tok"))
    assert 0 <= metrics["val_token_acc"] <= 1 and np.isfinite(metrics["val_l1"])
    meta = json.loads((root / "models/finetune/la_tok-0/meta.json").read_text())
    assert meta["spec"]["latent_meta"]["tokens_per_chunk"] == 8  # 2 codes for each of the 4 steps


def test_resume_equals_an_uninterrupted_run(dataset: Path, tmp_path: Path) -> None:
    straight = link(dataset, tmp_path / "straight", DEMOS, LAM_CODES)
    resumed = link(dataset, tmp_path / "resumed", DEMOS, LAM_CODES)
    item = Item("la_align", 1)
    assert main(tiny(), OFF, straight, item, cfg("la_align"))["resumed_from"] == 0
    main(tiny(train={**TINY["train"], "steps": 2}), OFF, resumed, item, cfg("la_align"))  # "killed" after 2
    assert main(tiny(), OFF, resumed, item, cfg("la_align"))["resumed_from"] == 2  # the step-2 checkpoint
    model = outputs(item)[0] / "model.safetensors"
    assert (straight / model).read_bytes() == (resumed / model).read_bytes()
    curve = outputs(item)[2]
    assert (straight / curve).read_text() == (resumed / curve).read_text()


def test_a_trained_policy_loads_by_its_directory_and_acts(dataset: Path, tmp_path: Path) -> None:
    root = link(dataset, tmp_path, DEMOS)
    item = Item("baseline", 0)
    main(tiny(), OFF, root, item, cfg("baseline"))
    policy = load_policy(root / outputs(item)[0])
    assert (policy.chunk, policy.cameras, policy.image_size) == (4, ("corner", "gripperPOV"), 16)
    rng = np.random.default_rng(0)
    obs = Observation(images={c: rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8) for c in policy.cameras},
                      proprio=rng.normal(size=(3, 4)).astype(np.float32), instructions=("move the square",) * 3,
                      tasks=("square",) * 3, states=np.zeros((3, 39)))
    actions = policy.act(obs)
    assert actions.shape == (3, 4, 4) and actions.dtype == np.float32
    assert np.array_equal(actions, policy.act(obs))  # no dropout or noise at inference
    with DemoReader(root / DEMOS) as reader:
        stats = reader.stats("actions")
    assert np.all(actions >= stats.q01 - 1e-5) and np.all(actions <= stats.q99 + 1e-5)


def test_latents_from_other_demos_are_a_clear_error(dataset: Path, tmp_path: Path) -> None:
    root = link(dataset, tmp_path, DEMOS)
    write_latents(root, dataset_sha256="f" * 64)
    with pytest.raises(StageError, match="lam_codes.hdf5: dataset_sha256 ffffffffffff.*differs.*dvc repro extract"):
        main(tiny(), OFF, root, Item("la_direct", 0), cfg("la_direct"))
    assert not (root / outputs(Item("la_direct", 0))[0]).exists()


def test_action_tokens_of_another_chunk_are_a_clear_error(dataset: Path, tmp_path: Path) -> None:
    root = link(dataset, tmp_path, DEMOS)
    write_latents(root, chunk=8)
    with pytest.raises(StageError, match="chunk = 8 but study.chunk = 4.*`dvc repro action_vq extract`"):
        main(tiny(), OFF, root, Item("la_tok", 0), cfg("la_tok"))


def test_missing_latents_say_to_run_extract(dataset: Path, tmp_path: Path) -> None:
    root = link(dataset, tmp_path, DEMOS)
    with pytest.raises(DatasetError, match="action_tokens.hdf5: no such file.*dvc repro extract"):
        main(tiny(), OFF, root, Item("la_tok", 0), cfg("la_tok"))


def test_a_token_weight_on_the_baseline_is_an_unknown_key(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("strategy_cfg:\n  baseline: {action_weight: 1.0, token_weight: 1.0}\n")
    with pytest.raises(ParamsError, match="strategy_cfg.baseline.token_weight.*unknown key"):
        load_strategy_cfg(params, "baseline")
    assert load_strategy_cfg(REPO / "params.yaml", "la_align").align_weight >= 0  # the repo's params load


def test_repo_params_load() -> None:
    params, _ = load_stage_params(REPO / "params.yaml", "finetune", Params)
    assert params.chunk >= 1
    for name in ("baseline", "la_align", "la_direct", "la_cond", "la_tok"):
        load_strategy_cfg(REPO / "params.yaml", name)


def test_command_line_rejects_an_unknown_strategy_with_the_closest_name() -> None:
    result = subprocess.run([sys.executable, "-m", "stages.finetune", "--strategy", "la_tk", "--seed", "0"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "la_tk" in result.stderr and "did you mean 'la_tok'" in result.stderr


def test_grad_accum_must_divide_the_batch() -> None:
    with pytest.raises(ParamsError, match="grad_accum.*divide train.batch_size"):
        tiny(grad_accum=3)
    assert tiny(grad_accum=2).grad_accum == 2


def test_a_frozen_vision_encoder_needs_pretrained_weights() -> None:
    with pytest.raises(ParamsError, match="vision_encoder.*tiny preset's random weights.*preset: pretrained"):
        tiny(vision_encoder="frozen")


def test_an_image_size_the_backbone_cannot_take_is_a_clear_error(dataset: Path, tmp_path: Path) -> None:
    root = link(dataset, tmp_path, DEMOS)
    backbone = {**TINY["backbone"], "input_size": 12}  # not a multiple of patch 4 x merge 2
    with pytest.raises(StageError, match="input_size = 12 px is not a multiple of 8"):
        main(tiny(backbone=backbone), OFF, root, Item("baseline", 0), cfg("baseline"))


def test_the_default_start_missing_says_to_run_pretrain(dataset: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    root = link(dataset, tmp_path, DEMOS)
    monkeypatch.chdir(root)  # stages run in the repository root; models/pretrain is relative to it
    backbone = {**TINY["backbone"], "preset": "pretrained", "pretrained": "models/pretrain"}
    with pytest.raises(StageError, match="models/pretrain.*start is not there.*dvc repro pretrain"):
        main(tiny(backbone=backbone), OFF, root, Item("baseline", 0), cfg("baseline"))
    assert not (root / outputs(Item("baseline", 0))[0]).exists()
