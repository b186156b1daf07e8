"""The `evaluate` stage end to end on a tiny collect-format file (real Meta-World layouts, no expert run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.evaluate_throughput import save_tiny_policy
from common.cli import StageError
from common.config import ParamsError, from_dict
from common.demos import DatasetMeta, DemoWriter, Episode
from common.evaluation.metrics import wilson
from common.policy import Observation, register_loader
from common.simulators import get_simulator, task_info
from common.simulators.metaworld import ACTION_SPACE, PROPRIO_KEYS
from common.simulators.metaworld.scene import sample_layout
from common.tracking import TrackingParams
from stages.evaluate import DEMOS, EPISODES_FILE, META_FILE, VIDEOS_DIR, Item, Params, metrics_path, results_dir
from stages.evaluate.__main__ import main

REPO = Path(__file__).resolve().parents[2]
METAWORLD = get_simulator("metaworld")
TASKS = ("drawer-open-v3", "button-press-topdown-v3")
SIZE = 32
OFF = TrackingParams(enabled=False, uri="", experiment="test")
TINY = {
    "suites": [
        {"name": "seen", "layouts": "train", "visual_shift": None, "episodes_per_task": 2},
        {"name": "unseen_layouts", "layouts": "heldout", "visual_shift": None, "episodes_per_task": 2},
        {"name": "visual_shift", "layouts": "train", "visual_shift": 0.8, "episodes_per_task": 2},
    ],
    "categories": ["short", "long_horizon", "precision"],
    "replan_every": 8,
    "max_steps": 200,
    "parallel_episodes": 4,
    "workers": 0,
    "threads": 1,
    "seed": 0,
    "videos_per_task": 1,
    "video_fps": 20,
}


def tiny(**changes: object) -> Params:
    return from_dict(Params, {**TINY, **changes}, prefix="evaluate")


def write_layout_dataset(path: Path, train: int = 2, heldout: int = 2) -> Path:
    """A valid collect file whose demos are 2-step stubs carrying real layouts (what evaluate reads)."""
    meta = DatasetMeta(
        env="metaworld", env_version="test", cameras=("corner", "gripperPOV"), image_size=(SIZE, SIZE),
        image_origin="upright", action_space=ACTION_SPACE, proprio_keys=PROPRIO_KEYS, proprio_dim=4,
        control_hz=80.0, collection_seed=0, code_version="test", tasks=TASKS,
        heldout_layouts={t: [{"pool": "heldout", "layout_id": i, "layout": sample_layout(t, 0, "heldout", i).tolist()}
                             for i in range(heldout)] for t in TASKS},
        extra={"instructions": {t: task_info(METAWORLD, t).instruction for t in TASKS},
               "categories": {t: list(task_info(METAWORLD, t).categories) for t in TASKS}},
    )
    done = np.array([False, True])
    with DemoWriter(path, meta) as writer:
        for task in TASKS:
            for i in range(train + 1):
                writer.add(Episode(
                    task=task, instruction=task_info(METAWORLD, task).instruction, layout_id=i,
                    layout=sample_layout(task, 0, "demos", i), split="train" if i < train else "val",
                    actions=np.zeros((2, 4), np.float32),
                    proprio={"ee_pos": np.zeros((2, 3), np.float32), "gripper_states": np.zeros((2, 1), np.float32)},
                    images={c: np.zeros((2, SIZE, SIZE, 3), np.uint8) for c in meta.cameras},
                    success=done, dones=done,
                ))
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    (root / DEMOS).parent.mkdir(parents=True)
    write_layout_dataset(root / DEMOS)
    return root / DEMOS


def new_root(tmp_path: Path, dataset: Path) -> Path:
    (tmp_path / DEMOS).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / DEMOS).symlink_to(dataset)
    return tmp_path


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def records(root: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (root / results_dir(name) / EPISODES_FILE).read_text().splitlines()]


@pytest.fixture(scope="module")
def expert_run(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> tuple[Path, dict]:
    root = new_root(tmp_path_factory.mktemp("expert"), dataset)
    return root, main(tiny(), OFF, root, Item(policy="expert", name="expert"))


def test_expert_scores_on_every_suite_and_writes_exactly_its_outputs(expert_run: tuple[Path, dict]) -> None:
    root, metrics = expert_run
    videos = {f"{results_dir('expert').as_posix()}/{VIDEOS_DIR}/{s}__{t}__ep0.gif"
              for s in ("seen", "unseen_layouts", "visual_shift") for t in TASKS}
    assert files_under(root) == {metrics_path("expert").as_posix(), f"{results_dir('expert').as_posix()}/{META_FILE}",
                                 f"{results_dir('expert').as_posix()}/{EPISODES_FILE}", *videos}
    assert metrics["per_suite"]["seen"]["rate"] >= 0.95 and metrics["per_suite"]["visual_shift"]["rate"] >= 0.95
    assert metrics == json.loads((root / metrics_path("expert")).read_text())
    n, k = metrics["success"]["n"], metrics["success"]["successes"]
    assert n == 12 and metrics["success"]["ci95"] == [round(x, 6) for x in wilson(k, n)]
    assert set(metrics["per_category"]) == {"short"} and set(metrics["per_task"]) == set(TASKS)
    rows = records(root, "expert")
    assert [(r["suite"], r["task"], r["episode"]) for r in rows][:3] == [
        ("seen", TASKS[0], 0), ("seen", TASKS[1], 0), ("seen", TASKS[0], 1)]
    for row in rows:
        assert row["policy"] == "expert" and row["categories"] == ["short"]
        assert row["success"] == (row["failure"] is None) and row["error"] is None
        assert row["steps_to_success"] == (row["steps"] if row["success"] else None)
    meta = json.loads((root / results_dir("expert") / META_FILE).read_text())
    assert [s["name"] for s in meta["suites"]] == ["seen", "unseen_layouts", "visual_shift"]
    assert meta["suites"][2]["visual_shift"] == 0.8 and meta["chunk"] == 1 and meta["tasks"] == list(TASKS)


def test_random_policy_scores_near_zero(tmp_path: Path, dataset: Path) -> None:
    root = new_root(tmp_path, dataset)
    metrics = main(tiny(max_steps=60, videos_per_task=0), OFF, root, Item(policy="random", name="random"))
    assert metrics["success"]["rate"] <= 0.1 and metrics["failures"]["timeout"] == metrics["success"]["n"]
    assert not (root / results_dir("random") / VIDEOS_DIR).exists()


@pytest.mark.slow
def test_results_are_identical_for_the_same_seed_with_any_worker_count(tmp_path: Path, dataset: Path) -> None:
    # The tiny conv policy's videos record its whole trajectory, from rendered pixels through batched inference
    # to the actions stepped in the workers: they must match byte for byte between 0 and 2 worker processes.
    suites = [{**TINY["suites"][2], "episodes_per_task": 1}]
    outputs = []
    for workers in (0, 2):
        run_root = new_root(tmp_path / f"tiny{workers}", dataset)
        save_tiny_policy(run_root / "models" / "tiny", ("corner", "gripperPOV"), SIZE)
        main(tiny(workers=workers, suites=suites, max_steps=40), OFF, run_root, Item(policy="models/tiny", name="t"))
        videos = sorted((run_root / results_dir("t") / VIDEOS_DIR).iterdir())
        outputs.append((records(run_root, "t"), [v.read_bytes() for v in videos]))
    assert outputs[0] == outputs[1] and len(outputs[0][1]) == 2


def bad_policy(root: Path, **meta: object) -> str:
    directory = save_tiny_policy(root / "models" / "bad", ("corner", "gripperPOV"), SIZE)
    data = {**json.loads((directory / "meta.json").read_text()), **meta}
    (directory / "meta.json").write_text(json.dumps(data))
    return "models/bad"


@pytest.mark.parametrize("change, message", [
    ({"cameras": ["corner", "topview"]}, r"cameras \['topview'\] are not in the dataset"),
    ({"image_size": 64}, "image_size = 64, the environment's is 32"),
    ({"action_dim": 7}, "action_dim = 7, the environment's is 4"),
    ({"dataset_sha256": "0" * 64}, "trained on dataset 000000000000"),
    ({"policy": "tiny_cnv"}, "did you mean 'tiny_conv'"),
])
def test_mismatched_policy_is_a_clear_error_before_any_rollout(tmp_path: Path, dataset: Path, change: dict,
                                                               message: str) -> None:
    root = new_root(tmp_path, dataset)
    policy = bad_policy(root, **change)
    with pytest.raises(StageError, match=message):
        main(tiny(), OFF, root, Item(policy=policy, name="bad"))
    assert not (root / "results").exists() and not (root / "metrics").exists()


def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path, dataset: Path) -> None:
    root = new_root(tmp_path, dataset)
    policy = bad_policy(root)
    (root / policy / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(StageError, match="(?s)loader failed.*corrupt"):
        main(tiny(), OFF, root, Item(policy=policy, name="bad"))
    (root / policy / "meta.json").write_text("{")
    with pytest.raises(StageError, match="meta.json: not valid JSON"):
        main(tiny(), OFF, root, Item(policy=policy, name="bad"))
    assert not (root / "results").exists() and not (root / "metrics").exists()


class WideActions:
    """A policy whose actions have 7 dimensions (Meta-World's have 4), declared nowhere in its meta.json."""

    chunk, cameras, image_size = 4, (), 0

    def act(self, obs: Observation) -> np.ndarray:
        return np.zeros((obs.batch, self.chunk, 7), np.float32)


@register_loader("test_wide")
def load_wide(directory: Path, meta: dict) -> WideActions:
    return WideActions()


def test_wrong_action_dim_fails_at_the_first_call_before_any_step(tmp_path: Path, dataset: Path) -> None:
    root = new_root(tmp_path, dataset)
    (root / "wide").mkdir()
    (root / "wide" / "meta.json").write_text(json.dumps({"policy": "test_wide"}))
    with pytest.raises(StageError, match=r"act returned shape \(4, 4, 7\).*environment's 4"):
        main(tiny(), OFF, root, Item(policy="wide", name="wide"))
    assert not (root / "results").exists() and not (root / "metrics").exists()


def test_bad_params_are_reported_together() -> None:
    suites = [{**TINY["suites"][0], "visual_shift": 1.5}, TINY["suites"][0]]
    with pytest.raises(ParamsError) as info:
        tiny(suites=suites, max_steps=0, workers=-1, threads=-1)
    text = str(info.value)
    for part in ("suites[0].visual_shift = 1.5", "distinct names", "max_steps = 0", "workers = -1", "threads = -1"):
        assert part in text
    # The simulator's limits are known once collect's metadata names it: checked there, all together.
    problems = tiny(max_steps=900, categories=["long"]).simulator_problems(METAWORLD)
    assert [p.field for p in problems] == ["categories[0]", "max_steps"]
    with pytest.raises(ParamsError, match="item.name = 'a/b'"):
        from_dict(Item, {"policy": "expert", "name": "a/b"}, prefix="item")


def test_cli_reports_an_unknown_policy_and_exits_2(tmp_path: Path, dataset: Path) -> None:
    import yaml

    root = new_root(tmp_path, dataset)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"tracking": {"enabled": False, "uri": "", "experiment": "t"}, "evaluate": TINY}))
    result = subprocess.run(
        [sys.executable, "-m", "stages.evaluate", "--params", str(params), "--root", str(root),
         "--policy", "expret", "--name", "x"], cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 2, result.stderr
    assert "did you mean 'expert'" in result.stderr
    assert not (root / "results").exists()
