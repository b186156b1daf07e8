from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from common.cli import StageError
from common.demos import DatasetError
from common.latents import ACTION_VQ, LAM, LatentFile
from stages.extract import ACTION_TOKENS, DEMOS, LAM_CODES, LAM_DIR, METRICS, TOKENIZER_DIR, Params
from stages.extract.__main__ import main
from tests.golden.extract.regenerate import GOLDEN, OFF, build_tiny_run, extracted_ids


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("extract")
    build_tiny_run(root)
    return root


def copy_of(run: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny run's inputs (dataset + models), without the extraction outputs."""
    root = tmp_path / "run"
    for path in (DEMOS, LAM_DIR, TOKENIZER_DIR):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (run / path).is_dir() else shutil.copy)(run / path, root / path)
    return root


def edit_meta(model_dir: Path, **changes: object) -> None:
    meta = json.loads((model_dir / "meta.json").read_text())
    (model_dir / "meta.json").write_text(json.dumps({**meta, **changes}))


def test_sidecars_annotate_every_step_with_padding_recorded(run: Path) -> None:
    lam_meta = json.loads((run / LAM_DIR / "meta.json").read_text())
    with LatentFile(run / LAM_CODES, LAM) as codes, LatentFile(run / ACTION_TOKENS, ACTION_VQ) as tokens:
        assert codes.names() == tokens.names() == [f"demo_{i}" for i in range(8)]
        assert (codes.meta["gap"], codes.meta["codebook_size"], codes.meta["codes_per_transition"]) == (2, 8, 2)
        assert (tokens.meta["chunk"], tokens.meta["tokens_per_chunk"], tokens.meta["vocab_size"]) == (4, 4, 16)
        assert codes.meta["model_sha256"] != tokens.meta["model_sha256"] and lam_meta["gap"] == 2
        lam_demo, vq_demo = codes.episode("demo_3"), tokens.episode("demo_3")
    assert lam_demo["codes"].shape == (12, 2) and lam_demo["vectors"].shape == (12, 2, 8)
    assert lam_demo["pad"].tolist() == [False] * 10 + [True] * 2  # t + gap past the last of 12 frames
    assert vq_demo["tokens"].shape == (12, 4)
    assert vq_demo["pad"].sum(1).tolist() == [0] * 9 + [1, 2, 3]  # chunk steps past the last action
    metrics = json.loads((run / METRICS).read_text())
    assert (metrics["steps"], metrics["lam_padded_steps"], metrics["chunk_padded_steps"]) == (96, 16, 48)
    assert not any("per_second" in key for key in metrics)  # timings go to MLflow: the file is reproducible


def test_extracted_ids_match_the_committed_golden_file(run: Path) -> None:
    golden = np.load(GOLDEN)
    ids = extracted_ids(run)
    assert sorted(golden.files) == sorted(ids)
    for key in golden.files:
        np.testing.assert_array_equal(ids[key], golden[key], err_msg=f"{key}: see {GOLDEN.parent}/regenerate.py")


def test_rerun_is_byte_identical_and_independent_of_the_batch_size(run: Path, tmp_path: Path) -> None:
    root = copy_of(run, tmp_path)
    main(Params(batch_size=7), OFF, root)
    for path in (LAM_CODES, ACTION_TOKENS):
        assert (root / path).read_bytes() == (run / path).read_bytes(), path


def test_tokenizer_for_another_action_space_is_a_clear_error(run: Path, tmp_path: Path) -> None:
    root = copy_of(run, tmp_path)
    edit_meta(root / TOKENIZER_DIR, normalization_high=[2.0, 1.0, 1.0, 1.0])
    with pytest.raises(StageError, match=r"(?s)normalization_low/high.*differ from the dataset's.*dvc repro"):
        main(Params(batch_size=16), OFF, root)
    edit_meta(root / TOKENIZER_DIR, action_dim=7)
    with pytest.raises(StageError, match="action_dim = 7, but the dataset's actions are 4-D"):
        main(Params(batch_size=16), OFF, root)
    assert not (root / LAM_CODES).exists() and not (root / ACTION_TOKENS).exists()


def test_chunk_length_that_does_not_fit_the_weights_is_a_clear_error(run: Path, tmp_path: Path) -> None:
    root = copy_of(run, tmp_path)
    edit_meta(root / TOKENIZER_DIR, chunk=8, tokens_per_chunk=8)
    with pytest.raises(StageError, match=r"model.pt does not fit the model meta.json describes \(chunk=8"):
        main(Params(batch_size=16), OFF, root)


def test_truncated_dataset_is_a_clear_error_and_leaves_no_output(run: Path, tmp_path: Path) -> None:
    root = copy_of(run, tmp_path)
    data = (root / DEMOS).read_bytes()
    (root / DEMOS).write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        main(Params(batch_size=16), OFF, root)
    assert not (root / "data" / "extract").exists() and not (root / METRICS).exists()


def test_missing_models_name_the_stage_to_run(run: Path, tmp_path: Path) -> None:
    root = copy_of(run, tmp_path)
    shutil.rmtree(root / TOKENIZER_DIR)
    with pytest.raises(StageError, match="dvc repro action_vq"):
        main(Params(batch_size=16), OFF, root)
