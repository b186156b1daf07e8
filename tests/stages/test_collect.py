from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from common.cli import StageError
from common.config import from_dict
from common.demos import DemoReader, validate_file
from common.provenance import file_sha256
from common.tracking import TrackingParams
from stages.collect import DEMOS, METRICS, Params
from stages.collect.__main__ import main

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "simulator": "metaworld",
    "tasks": ["drawer-open-v3", "button-press-topdown-v3"],
    "demos_per_task": 2,
    "val_demos_per_task": 1,
    "heldout_layouts_per_task": 2,
    "max_attempts_per_task": 6,
    "max_episode_steps": 200,
    "cameras": ["corner", "gripperPOV"],
    "image_size": 32,
    "seed": 0,
    "workers": 2,
}
OFF = TrackingParams(enabled=False, uri="", experiment="test")


def tiny(**changes: object) -> Params:
    return from_dict(Params, {**TINY, **changes}, prefix="collect")


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("collect")
    metrics = main(tiny(), OFF, root)
    return root, metrics


def test_tiny_collect_writes_exactly_its_declared_outputs(tiny_run: tuple[Path, dict]) -> None:
    root, metrics = tiny_run
    assert files_under(root) == {DEMOS.as_posix(), METRICS.as_posix()}
    meta = validate_file(root / DEMOS)
    assert meta.cameras == ("corner", "gripperPOV") and meta.image_size == (32, 32)
    assert meta.action_space.dim == 4 and meta.proprio_dim == 4 and meta.control_hz == pytest.approx(80.0)
    assert meta.tasks == tuple(TINY["tasks"]) and "metaworld==" in meta.env_version
    assert metrics["episodes"] == 6 and 0 < metrics["expert_success_rate"] <= 1
    with DemoReader(root / DEMOS) as reader:
        episodes = list(reader)
    for task in TINY["tasks"]:
        mine = [e for e in episodes if e.task == task]
        assert [e.split for e in mine] == ["train", "train", "val"]
        assert all(e.success[-1] and e.dones[-1] and not e.success[:-1].any() for e in mine)
        assert all(e.instruction for e in mine)
        layouts = np.array([e.layout for e in mine] + [h["layout"] for h in meta.heldout_layouts[task]])
        assert len(np.unique(layouts, axis=0)) == 5  # 3 demonstrated + 2 held out, all distinct
        assert {"short"} <= set(meta.extra["categories"][task])


def test_same_seed_gives_identical_actions_and_images(tiny_run: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = tiny_run
    main(tiny(workers=1), OFF, tmp_path)  # another worker count must not change anything either
    with DemoReader(root / DEMOS) as first, DemoReader(tmp_path / DEMOS) as second:
        assert first.names == second.names
        for a, b in zip(first, second):
            assert (a.task, a.layout_id, a.split) == (b.task, b.layout_id, b.split)
            np.testing.assert_array_equal(a.actions, b.actions)
            for camera in a.images:
                np.testing.assert_array_equal(a.images[camera], b.images[camera])
    assert (root / METRICS).read_text() == (tmp_path / METRICS).read_text()
    # Reproducible to the hash: no timestamps in the HDF5 file, and a code fingerprint instead of the commit.
    assert file_sha256(root / DEMOS) == file_sha256(tmp_path / DEMOS)


def test_expert_shortfall_is_a_clear_error_and_leaves_no_output(tmp_path: Path) -> None:
    params = tiny(tasks=["drawer-open-v3"], max_episode_steps=3, max_attempts_per_task=3, workers=1)
    with pytest.raises(StageError, match="fewer than 3 successes.*max_attempts_per_task"):
        main(params, OFF, tmp_path)
    assert not (tmp_path / DEMOS).exists() and not (tmp_path / METRICS).exists()
    assert list((tmp_path / DEMOS).parent.iterdir()) == []  # no partial file either


def write_params(path: Path, **changes: object) -> Path:
    path.write_text(yaml.safe_dump({"tracking": {"enabled": False, "uri": "", "experiment": "t"},
                                    "collect": {**TINY, **changes}}))
    return path


def test_killed_collect_leaves_no_final_output(tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml", demos_per_task=20, max_attempts_per_task=40)
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.collect", "--params", str(params), "--root", str(tmp_path)],
        cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    partial_dir = tmp_path / DEMOS.parent
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(partial_dir.glob("*.partial")):
        time.sleep(0.2)
    time.sleep(1.0)  # let it write some episodes
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(partial_dir.glob("*.partial")), "the stage never started writing"
    assert not (tmp_path / DEMOS).exists() and not (tmp_path / METRICS).exists()
    main(tiny(tasks=["button-press-topdown-v3"], val_demos_per_task=0), OFF, tmp_path)  # a rerun cleans up
    assert files_under(tmp_path) == {"params.yaml", DEMOS.as_posix(), METRICS.as_posix()}


def test_cli_reports_bad_params_and_exits_2(tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml", image_size="big", workerz=2)
    result = subprocess.run(
        [sys.executable, "-m", "stages.collect", "--params", str(params), "--root", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "collect.image_size = 'big': expected an integer" in result.stderr
    assert "collect.workerz" in result.stderr and "did you mean 'workers'" in result.stderr
    assert not (tmp_path / "data").exists()
