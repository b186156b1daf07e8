from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.demos import DatasetError
from common.latents import ACTION_VQ, LAM, LatentFile, validate_sidecar, write_sidecar

LAM_META = {"kind": LAM, "dataset_sha256": "d", "model_sha256": "m", "padding": "last frame", "code_version": "c",
            "gap": 2, "codebook_size": 8, "codes_per_transition": 2, "code_dim": 3, "camera": "corner"}
VQ_META = {"kind": ACTION_VQ, "dataset_sha256": "d", "model_sha256": "m", "padding": "edge", "code_version": "c",
           "chunk": 4, "tokens_per_chunk": 4, "vocab_size": 16, "action_dim": 4, "normalization": "quantile"}


def lam_arrays(length: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"codes": rng.integers(0, 8, (length, 2)).astype(np.int32),
            "vectors": rng.normal(size=(length, 2, 3)).astype(np.float32),
            "pad": np.arange(length) + 2 >= length}


def test_round_trip_in_demo_order_with_meta(tmp_path: Path) -> None:
    episodes = [(f"demo_{i}", 5 + i, lam_arrays(5 + i, i)) for i in (0, 1, 10, 2)]
    assert write_sidecar(tmp_path / "lam.hdf5", LAM_META, episodes) == 4
    with LatentFile(tmp_path / "lam.hdf5", LAM) as latents:
        assert latents.meta == LAM_META
        assert latents.names() == ["demo_0", "demo_1", "demo_2", "demo_10"]
        got = latents.episode("demo_10")
    for key, value in lam_arrays(15, 10).items():
        np.testing.assert_array_equal(got[key], value)
        assert got[key].dtype == value.dtype
    assert validate_sidecar(tmp_path / "lam.hdf5", LAM, {n: t for n, t, _ in episodes}) == LAM_META


def test_writing_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    episodes = [(f"demo_{i}", 6, lam_arrays(6, i)) for i in range(3)]
    write_sidecar(tmp_path / "a.hdf5", LAM_META, episodes)
    write_sidecar(tmp_path / "b.hdf5", LAM_META, episodes)
    assert (tmp_path / "a.hdf5").read_bytes() == (tmp_path / "b.hdf5").read_bytes()


def test_ids_outside_the_vocabulary_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    tokens = {"tokens": np.full((3, 4), 16, np.int32), "pad": np.zeros((3, 4), bool)}
    with pytest.raises(DatasetError, match=r"demo_0/tokens: ids in \[16, 16\], outside the vocabulary \[0, 16\)"):
        write_sidecar(tmp_path / "t.hdf5", VQ_META, [("demo_0", 3, tokens)])
    assert list(tmp_path.iterdir()) == []


def test_lengths_that_differ_from_the_demos_are_reported_by_demo_and_field(tmp_path: Path) -> None:
    tokens = {"tokens": np.zeros((3, 4), np.int32), "pad": np.zeros((3, 4), bool)}
    write_sidecar(tmp_path / "t.hdf5", VQ_META, [("demo_0", 3, tokens), ("demo_1", 3, tokens)])
    with pytest.raises(DatasetError) as info:
        validate_sidecar(tmp_path / "t.hdf5", ACTION_VQ, {"demo_0": 3, "demo_1": 5, "demo_2": 4})
    message = str(info.value)
    assert "demo_2: in the dataset but not in the sidecar" in message
    assert "demo_1/tokens: shape (3, 4), expected (5, 4)" in message and "t.hdf5" in message


def test_wrong_kind_and_truncated_files_are_clear_errors(tmp_path: Path) -> None:
    write_sidecar(tmp_path / "lam.hdf5", LAM_META, [("demo_0", 40, lam_arrays(40))])
    with pytest.raises(DatasetError, match="meta.kind = 'lam', expected 'action_vq'"):
        LatentFile(tmp_path / "lam.hdf5", ACTION_VQ)
    data = (tmp_path / "lam.hdf5").read_bytes()
    (tmp_path / "cut.hdf5").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        validate_sidecar(tmp_path / "cut.hdf5", LAM, {"demo_0": 40})
    with pytest.raises(DatasetError, match="no such file"):
        LatentFile(tmp_path / "missing.hdf5", LAM)
