"""One reader over every demonstration format: detection, held-out splits, and clear errors without the validator."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from common.demos import FORMATS, DatasetError, DemoReader, validate_file
from common.demos import schema as S
from common.demos.native import NativeFormat
from common.demos.splits import held_out
from tests.common.test_demos import _edit, _replace, make_episode, write, write_libero_file


def native_file(tmp_path: Path) -> Path:
    return write(tmp_path / "native.hdf5", [make_episode(i, split="val" if i == 1 else "train") for i in range(3)])


def libero_file(tmp_path: Path, demos: int = 3) -> Path:
    path = tmp_path / f"libero_{demos}.hdf5"
    write_libero_file(path, length=6, demos=demos)
    return path


@pytest.mark.parametrize("kind", ["native", "libero"])
def test_both_formats_read_through_one_interface(tmp_path: Path, kind: str) -> None:
    path = native_file(tmp_path) if kind == "native" else libero_file(tmp_path)
    with DemoReader(path) as reader:
        assert reader.format is FORMATS[kind]
        assert len(reader) == 3 and reader.names == ["demo_0", "demo_1", "demo_2"]
        assert sorted(reader.splits["train"] + reader.splits["val"]) == reader.names
        for name in reader.names:
            episode = reader.episode(name)
            assert episode.split == reader.split(name)
            assert episode.length == reader.steps(name) > 0
            assert episode.instruction and episode.task == reader.task(name)
            assert set(episode.images) == set(reader.meta.cameras)
            assert episode.proprio_vector(reader.meta.proprio_keys).shape == (episode.length, reader.meta.proprio_dim)
        assert reader.stats(S.ACTIONS).mean.shape == (reader.meta.action_space.dim,)


def test_the_formats_recognise_disjoint_files(tmp_path: Path) -> None:
    for path in (native_file(tmp_path), libero_file(tmp_path)):
        with h5py.File(path, "r") as f:
            assert sum(fmt.recognises(f) for fmt in FORMATS.values()) == 1


def test_a_new_format_is_one_registered_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test double: a format that recognises a `toy` attribute and otherwise reads like the native one."""

    class ToyFormat(NativeFormat):
        name = "toy"

        def recognises(self, file: h5py.File) -> bool:
            return "toy" in file.attrs

        def meta(self, file: h5py.File, path: Path, names: list[str]) -> S.DatasetMeta:
            return S.DatasetMeta.from_json(str(file.attrs[S.ATTR_METADATA]))

    path = native_file(tmp_path)
    _edit(path, lambda f: f.attrs.__setitem__("toy", 1))
    with pytest.raises(DatasetError, match=r"formats \['native', 'toy'\] all recognise it"):
        monkeypatch.setitem(FORMATS, "toy", ToyFormat())
        DemoReader(path)
    _edit(path, lambda f: (f.attrs.__delitem__(S.ATTR_FORMAT), f["data"].attrs.__delitem__(S.ATTR_PROBLEM_INFO)))
    with DemoReader(path) as reader:
        assert reader.format.name == "toy" and len(reader) == 3


def test_libero_validation_split_is_held_out_by_name(tmp_path: Path) -> None:
    path = libero_file(tmp_path, demos=10)
    with DemoReader(path) as reader:
        assert reader.splits == {"train": [f"demo_{i}" for i in range(10) if i != 5], "val": ["demo_5"]}
        assert reader.episode("demo_5").split == "val"
        # statistics of a file that stores none come from the training split only
        train = np.concatenate([reader.episode(n, cameras=()).actions for n in reader.splits["train"]])
        np.testing.assert_allclose(reader.stats(S.ACTIONS).mean, train.mean(0), rtol=1e-6)
    with DemoReader(path, val_fraction=0.3) as reader:
        assert reader.splits["val"] == ["demo_1", "demo_5", "demo_8"]
    with DemoReader(path, val_fraction=0.0) as reader:
        assert reader.splits["val"] == []
    # the split is a function of the names alone: other contents, same names, same split
    other = tmp_path / "other.hdf5"
    write_libero_file(other, length=3, demos=10)
    with DemoReader(other) as reader:
        assert reader.splits["val"] == ["demo_5"]


@pytest.mark.parametrize(("count", "fraction", "val"), [(1, 0.1, 0), (2, 0.1, 1), (3, 0.5, 1), (50, 0.1, 5),
                                                         (4, 0.99, 3), (30, 0.1, 3)])
def test_held_out_count(count: int, fraction: float, val: int) -> None:
    names = [f"demo_{i}" for i in range(count)]
    assert len(held_out(names, fraction)) == val
    assert held_out(names, fraction) == held_out(list(names), fraction)


def test_declared_splits_win_over_the_fraction(tmp_path: Path) -> None:
    path = libero_file(tmp_path)
    _edit(path, lambda f: [f[f"data/demo_{i}"].attrs.__setitem__(S.ATTR_SPLIT, "train") for i in range(3)])
    with DemoReader(path, val_fraction=0.5) as reader:
        assert reader.splits["val"] == []


@pytest.mark.parametrize("fraction", [-0.1, 1.0, float("nan")])
def test_bad_val_fraction_is_a_clear_error(tmp_path: Path, fraction: float) -> None:
    with pytest.raises(DatasetError, match=r"val_fraction = .* is not in \[0, 1\)\. Next step"):
        DemoReader(libero_file(tmp_path), val_fraction=fraction)


def _zero_steps(f: h5py.File, demo: str) -> None:
    group = f[f"data/{demo}"]
    for key in list(group) + [f"obs/{k}" for k in group["obs"]]:
        if isinstance(group[key], h5py.Dataset):
            _replace(group, key, group[key][:0])


@pytest.mark.parametrize("kind", ["native", "libero"])
def test_zero_step_demo_is_a_clear_error_without_the_validator(tmp_path: Path, kind: str) -> None:
    path = native_file(tmp_path) if kind == "native" else libero_file(tmp_path)
    _edit(path, lambda f: _zero_steps(f, "demo_1"))
    with DemoReader(path) as reader:
        reader.episode("demo_0")  # the other demos still read
        with pytest.raises(DatasetError) as info:
            reader.episode("demo_1")
    assert type(info.value) is DatasetError
    assert f"{path}: demo_1/actions: 0 steps" in str(info.value) and "Next step" in str(info.value)


LENGTH_CHANGES = {
    "image": ("obs/corner_rgb", "obs/corner_rgb has 4"),
    "proprio": ("obs/gripper_states", "obs/gripper_states has 4"),
    "success": ("success", "success has 4"),
    "dones": ("dones", "dones has 4"),
}


@pytest.mark.parametrize("field", sorted(LENGTH_CHANGES))
def test_length_mismatch_is_a_clear_error_without_the_validator(tmp_path: Path, field: str) -> None:
    key, message = LENGTH_CHANGES[field]
    path = native_file(tmp_path)
    _edit(path, lambda f: _replace(f, f"data/demo_2/{key}", f[f"data/demo_2/{key}"][:-1]))
    with DemoReader(path) as reader:
        with pytest.raises(DatasetError, match=f"demo_2: actions has 5 steps, but {message};") as info:
            reader.episode("demo_2")
        with pytest.raises(DatasetError, match="demo_2: actions has 5 steps"):
            list(reader)
    assert str(path) in str(info.value) and "python -m common.demos" in str(info.value)


def test_libero_rewards_length_is_checked(tmp_path: Path) -> None:
    path = libero_file(tmp_path)
    _edit(path, lambda f: _replace(f, "data/demo_0/rewards", np.zeros(9, np.uint8)))
    with DemoReader(path) as reader, pytest.raises(DatasetError, match="actions has 6 steps, but rewards has 9"):
        reader.episode("demo_0")


def test_a_file_no_format_recognises_says_what_each_needs(tmp_path: Path) -> None:
    path = libero_file(tmp_path)
    _edit(path, lambda f: [f["data"].attrs.__delitem__(k) for k in ("problem_info", "bddl_file_name")])
    with pytest.raises(DatasetError, match=r"no known demonstration format recognises it \(libero: .*problem_info.*; "
                                           r"native: a root attribute 'format'"):
        DemoReader(path)


def test_missing_problem_info_names_it(tmp_path: Path) -> None:
    path = libero_file(tmp_path)
    _edit(path, lambda f: f["data"].attrs.__delitem__(S.ATTR_PROBLEM_INFO))
    with pytest.raises(DatasetError, match=r"demo_0/no language instruction: data.attrs\['problem_info'\]"):
        validate_file(path)


def test_nan_in_libero_proprio_is_located(tmp_path: Path) -> None:
    path = libero_file(tmp_path)
    _edit(path, lambda f: f["data/demo_2/obs/gripper_states"].__setitem__((4, 1), np.nan))
    with pytest.raises(DatasetError, match=r"demo_2/obs/gripper_states: 1 NaN/inf value\(s\), the first \(nan\) at "
                                           r"step 4, dimension 1"):
        validate_file(path)
