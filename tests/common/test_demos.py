from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest

from common.demos import ActionSpace, DatasetError, DatasetMeta, DemoReader, DemoWriter, Episode, validate_file
from common.demos import schema as S

CAMERAS = ("corner", "gripperPOV")
SIZE = 8


def make_meta() -> DatasetMeta:
    return DatasetMeta(
        env="metaworld", env_version="test", cameras=CAMERAS, image_size=(SIZE, SIZE), image_origin="upright",
        action_space=ActionSpace(4, ("dx", "dy", "dz", "gripper"), (-1.0,) * 4, (1.0,) * 4),
        proprio_keys=("ee_pos", "gripper_states"), proprio_dim=4, control_hz=80.0, collection_seed=0,
        code_version="abc", tasks=("drawer-open-v3",), heldout_layouts={"drawer-open-v3": []}, extra={"k": 1},
    )


def make_episode(seed: int, length: int = 5, split: str = "train") -> Episode:
    rng = np.random.default_rng(seed)
    success = np.zeros(length, bool)
    success[-1] = True
    return Episode(
        task="drawer-open-v3", instruction="pull the drawer open by its handle", layout_id=seed,
        layout=rng.uniform(size=6), split=split,
        actions=rng.uniform(-1, 1, (length, 4)).astype(np.float32),
        proprio={"ee_pos": rng.normal(size=(length, 3)).astype(np.float32),
                 "gripper_states": rng.uniform(size=(length, 1)).astype(np.float32)},
        images={c: rng.integers(0, 256, (length, SIZE, SIZE, 3), dtype=np.uint8) for c in CAMERAS},
        success=success, dones=success.copy(),
    )


def write(path: Path, episodes: list[Episode]) -> Path:
    with DemoWriter(path, make_meta()) as writer:
        for episode in episodes:
            writer.add(episode)
    return path


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    episodes = [make_episode(i, length=4 + i, split="val" if i == 2 else "train") for i in range(3)]
    path = write(tmp_path / "demos.hdf5", episodes)
    assert validate_file(path) == make_meta()
    with DemoReader(path) as reader:
        assert reader.names == ["demo_0", "demo_1", "demo_2"]
        for original, loaded in zip(episodes, reader):
            assert (loaded.task, loaded.instruction, loaded.layout_id, loaded.split) == (
                original.task, original.instruction, original.layout_id, original.split)
            np.testing.assert_array_equal(loaded.actions, original.actions)
            np.testing.assert_array_equal(loaded.layout, original.layout)
            np.testing.assert_array_equal(loaded.success, original.success)
            np.testing.assert_array_equal(loaded.dones, original.dones)
            for camera in CAMERAS:
                np.testing.assert_array_equal(loaded.images[camera], original.images[camera])
            for key in original.proprio:
                np.testing.assert_array_equal(loaded.proprio[key], original.proprio[key])
        # Statistics come from the training split only.
        train = np.concatenate([e.actions for e in episodes if e.split == "train"])
        stats = reader.stats("actions")
        np.testing.assert_allclose(stats.mean, train.mean(0), rtol=1e-5)
        np.testing.assert_allclose(stats.q99, np.percentile(train, 99, axis=0), rtol=1e-5)
        assert reader.stats("proprio").mean.shape == (4,)


def test_same_episodes_give_identical_bytes(tmp_path: Path) -> None:
    episodes = [make_episode(i) for i in range(2)]
    digests = [hashlib.sha256(write(tmp_path / f"{i}.hdf5", episodes).read_bytes()).hexdigest() for i in range(2)]
    assert digests[0] == digests[1]


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "demos.hdf5"
    with pytest.raises(RuntimeError):
        with DemoWriter(path, make_meta()) as writer:
            writer.add(make_episode(0))
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DatasetError, match="no training-split episode"):
        write(path, [make_episode(0, split="val")])
    assert list(tmp_path.iterdir()) == []


def _edit(path: Path, change: Callable[[h5py.File], None]) -> None:
    with h5py.File(path, "r+") as f:
        change(f)


def _replace(f: h5py.File, key: str, data: np.ndarray) -> None:
    del f[key]
    f[key] = data


CORRUPTIONS: dict[str, tuple[Callable[[h5py.File], None], str]] = {
    "nan action": (lambda f: f["data/demo_1/actions"].__setitem__((2, 1), np.nan),
                   r"demo_1/actions: 1 NaN/inf value\(s\), the first \(nan\) at step 2, dimension 1"),
    "inf proprio": (lambda f: f["data/demo_0/obs/ee_pos"].__setitem__((0, 0), np.inf),
                    r"demo_0/obs/ee_pos: 1 NaN/inf value\(s\), the first \(inf\) at step 0, dimension 0"),
    "short image stream": (lambda f: _replace(f, "data/demo_0/obs/corner_rgb", f["data/demo_0/obs/corner_rgb"][:-1]),
                           r"demo_0/obs/corner_rgb: shape \(4, 8, 8, 3\), expected \(5, 8, 8, 3\)"),
    "wrong action dim": (lambda f: _replace(f, "data/demo_1/actions", np.zeros((5, 7), np.float32)),
                         r"demo_1/actions: shape \(5, 7\), expected \(T>0, 4\)"),
    "missing instruction": (lambda f: f["data/demo_0"].attrs.__setitem__(S.ATTR_INSTRUCTION, ""),
                            "demo_0/attrs/language_instruction: missing or empty"),
    "float images": (lambda f: _replace(f, "data/demo_1/obs/gripperPOV_rgb", np.zeros((5, 8, 8, 3), np.float32)),
                     "demo_1/obs/gripperPOV_rgb: dtype float32, expected uint8"),
    "integer actions": (lambda f: _replace(f, "data/demo_0/actions", np.zeros((5, 4), np.int64)),
                        "demo_0/actions: dtype int64, expected float32"),
    "missing proprio": (lambda f: f["data/demo_1/obs"].__delitem__("gripper_states"),
                        "demo_1/obs/gripper_states: missing"),
    "proprio length": (lambda f: _replace(f, "data/demo_0/obs/ee_pos", np.zeros((3, 3), np.float32)),
                       "demo_0/obs/ee_pos: 3 steps, but actions has 5"),
    "num_samples": (lambda f: f["data/demo_0"].attrs.__setitem__(S.ATTR_NUM_SAMPLES, 9),
                    "demo_0/attrs/num_samples: 9, but actions has 5 steps"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_validator_names_demo_and_field_of_each_corruption(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / "demos.hdf5", [make_episode(0), make_episode(1)])
    change, message = CORRUPTIONS[name]
    _edit(path, change)
    with pytest.raises(DatasetError, match=message) as info:
        validate_file(path)
    assert str(path) in str(info.value) and "Next step" in str(info.value)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_file_is_a_clear_error(tmp_path: Path, keep: float) -> None:
    path = write(tmp_path / "demos.hdf5", [make_episode(i, length=20) for i in range(3)])
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        validate_file(path)


def test_missing_file_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file.*dvc repro collect"):
        validate_file(tmp_path / "absent.hdf5")


def write_libero_file(path: Path, length: int = 6, demos: int = 2) -> list[np.ndarray]:
    """A file in LIBERO's exact layout (as its create_dataset script writes it): images upside-down."""
    rng = np.random.default_rng(0)
    upright = []
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_name"] = "Libero_Kitchen_Tabletop_Manipulation"
        data.attrs["problem_info"] = json.dumps({
            "problem_name": "libero_kitchen_tabletop_manipulation", "domain_name": "kitchen_tabletop",
            "language_instruction": "open the top drawer of the cabinet"})
        data.attrs["macros_image_convention"] = "opengl"
        data.attrs["bddl_file_name"] = "KITCHEN_SCENE1_open_the_top_drawer_of_the_cabinet.bddl"
        data.attrs["env_args"] = json.dumps({"type": 1, "env_name": "Libero_Kitchen_Tabletop_Manipulation"})
        data.attrs["num_demos"] = demos
        data.attrs["total"] = demos * length
        for i in range(demos):
            demo = data.create_group(f"demo_{i}")
            demo.attrs["num_samples"] = length
            demo.attrs["init_state"] = rng.normal(size=10)
            demo.create_dataset("actions", data=rng.uniform(-1, 1, (length, 7)))  # float64 in LIBERO
            demo.create_dataset("dones", data=np.eye(length, dtype=np.uint8)[-1])
            demo.create_dataset("rewards", data=np.eye(length, dtype=np.uint8)[-1])
            demo.create_dataset("states", data=rng.normal(size=(length, 47)))
            demo.create_dataset("robot_states", data=rng.normal(size=(length, 9)))
            obs = demo.create_group("obs")
            for camera in ("agentview_rgb", "eye_in_hand_rgb"):
                image = rng.integers(0, 256, (length, 128, 128, 3), dtype=np.uint8)
                upright.append(image)
                obs.create_dataset(camera, data=image[:, ::-1, ::-1])  # stored upside-down
            obs.create_dataset("ee_pos", data=rng.normal(size=(length, 3)))
            obs.create_dataset("ee_ori", data=rng.normal(size=(length, 3)))
            obs.create_dataset("ee_states", data=rng.normal(size=(length, 6)))
            obs.create_dataset("gripper_states", data=rng.normal(size=(length, 2)))
            obs.create_dataset("joint_states", data=rng.normal(size=(length, 7)))
    return upright


def test_reads_a_file_in_liberos_layout(tmp_path: Path) -> None:
    path = tmp_path / "KITCHEN_SCENE1_open_the_top_drawer_of_the_cabinet_demo.hdf5"
    upright = write_libero_file(path)
    meta = validate_file(path)
    assert meta.cameras == ("agentview", "eye_in_hand")
    assert meta.image_size == (128, 128)
    assert meta.action_space.dim == 7
    assert meta.proprio_keys == ("ee_states", "gripper_states") and meta.proprio_dim == 8
    with DemoReader(path) as reader:
        assert reader.format.name == "libero" and len(reader) == 2
        episode = reader.episode("demo_1")
        assert episode.instruction == "open the top drawer of the cabinet"
        assert episode.actions.dtype == np.float32 and episode.actions.shape == (6, 7)
        assert episode.proprio_vector(meta.proprio_keys).shape == (6, 8)
        np.testing.assert_array_equal(episode.images["agentview"], upright[2])  # turned upright on read
        np.testing.assert_array_equal(episode.images["eye_in_hand"], upright[3])
        assert episode.success.tolist() == [False] * 5 + [True]
        assert reader.stats("actions").mean.shape == (7,)


def test_libero_file_without_instruction_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "libero.hdf5"
    write_libero_file(path)
    _edit(path, lambda f: f["data"].attrs.__setitem__("problem_info", json.dumps({"problem_name": "x"})))
    with pytest.raises(DatasetError, match=r"demo_0/no language instruction: data.attrs\['problem_info'\] has no "
                       r"non-empty 'language_instruction'") as info:
        validate_file(path)
    assert "LIBERO" in str(info.value)  # the next step fits the format: no `dvc repro collect` for a LIBERO file
