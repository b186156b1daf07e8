"""Evaluation library: Wilson intervals, metrics grouping, visual shifts, episode plans, rollouts, GIFs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from common.cli import StageError
from common.demos import DatasetMeta
from common.evaluation.metrics import summarize, wilson
from common.evaluation.rollout import run_episodes
from common.evaluation.suites import SuiteParams, episode_seed, plan_episodes, task_categories
from common.evaluation.video import write_gif
from common.evaluation.worker import SimSettings
from common.policy import load_policy
from common.simulators import Scene, get_simulator
from common.simulators.metaworld import ACTION_SPACE, PROPRIO_KEYS
from common.simulators.metaworld.scene import sample_layout

TASKS = ("drawer-open-v3", "button-press-topdown-v3")
METAWORLD = get_simulator("metaworld")


def test_wilson_matches_known_values() -> None:
    np.testing.assert_allclose(wilson(5, 10), (0.236593, 0.763407), atol=1e-6)
    np.testing.assert_allclose(wilson(0, 10), (0.0, 0.277533), atol=1e-6)
    np.testing.assert_allclose(wilson(10, 10), (0.722467, 1.0), atol=1e-6)
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(50, 100)
    assert hi - lo < wilson(5, 10)[1] - wilson(5, 10)[0]  # more trials, narrower interval


def test_summarize_counts_a_task_in_each_of_its_categories() -> None:
    records = [
        {"task": "a", "suite": "seen", "categories": ["long_horizon", "precision"], "success": True,
         "failure": None, "steps_to_success": 10},
        {"task": "b", "suite": "seen", "categories": ["short"], "success": False, "failure": "timeout",
         "steps_to_success": None},
        {"task": "a", "suite": "visual_shift", "categories": ["long_horizon", "precision"], "success": False,
         "failure": "error", "steps_to_success": None},
    ]
    metrics = summarize(records)
    assert metrics["success"] == {"n": 3, "successes": 1, "rate": round(1 / 3, 6),
                                  "ci95": [round(x, 6) for x in wilson(1, 3)]}
    assert metrics["per_task"]["a"]["n"] == 2 and metrics["per_suite"]["seen"]["successes"] == 1
    assert metrics["per_category"]["precision"]["n"] == 2 and metrics["per_category"]["short"]["rate"] == 0.0
    assert metrics["per_suite_category"]["seen/long_horizon"]["rate"] == 1.0
    assert metrics["failures"] == {"timeout": 1, "error": 1} and metrics["mean_steps_to_success"] == 10


@pytest.fixture(scope="module")
def sim() -> Scene:
    sim = METAWORLD.scene("drawer-open-v3", ("corner", "gripperPOV"), 32)
    yield sim
    sim.close()


def expert_rollout(sim: Scene, layout: np.ndarray, steps: int) -> tuple[np.ndarray, bool]:
    expert, state, success, states = METAWORLD.expert(sim.task), sim.reset(layout), False, []
    for _ in range(steps):
        state, success, _ = sim.step(np.clip(expert.get_action(state), -1, 1))
        states.append(state)
        if success:
            break
    return np.array(states), success


def test_visual_shift_changes_pixels_but_not_physics(sim: Scene) -> None:
    layout = sample_layout("drawer-open-v3", 0, "demos", 0)
    sim.shift_appearance(None, 0)
    sim.reset(layout)
    plain = sim.render(("corner", "gripperPOV"))
    plain_states, plain_success = expert_rollout(sim, layout, 200)

    sim.shift_appearance(0.8, seed=7)
    sim.reset(layout)
    shifted = sim.render(("corner", "gripperPOV"))
    for camera in plain:
        diff = np.abs(shifted[camera].astype(int) - plain[camera].astype(int)).mean()
        assert diff > 5, f"{camera}: a severity-0.8 shift changed the image by only {diff:.2f} grey levels"
    shifted_states, shifted_success = expert_rollout(sim, layout, 200)
    assert plain_success and shifted_success
    np.testing.assert_array_equal(plain_states, shifted_states)  # the expert reads state: same trajectory

    sim.shift_appearance(0.8, seed=8)
    sim.reset(layout)
    assert not np.array_equal(sim.render(("corner",))["corner"], shifted["corner"])  # seeded, per episode
    sim.shift_appearance(None, 0)  # restoring gives back the collected scene exactly
    sim.reset(layout)
    for camera, image in sim.render(("corner", "gripperPOV")).items():
        np.testing.assert_array_equal(image, plain[camera])


def test_policy_images_are_exactly_what_collect_records(sim: Scene) -> None:
    layout = sample_layout("drawer-open-v3", 0, "demos", 3)
    collect_sim = METAWORLD.scene("drawer-open-v3", ("corner", "gripperPOV"), 32)  # the renderer collect uses
    try:
        collect_sim.reset(layout)
        recorded = collect_sim.render()
    finally:
        collect_sim.close()
    sim.shift_appearance(None, 0)
    sim.reset(layout)
    for camera, image in sim.render(("gripperPOV", "corner")).items():
        np.testing.assert_array_equal(image, recorded[camera])  # upright, same size, same pixels


def dataset_meta(heldout: int = 1) -> DatasetMeta:
    return DatasetMeta(
        env="metaworld", env_version="test", cameras=("corner", "gripperPOV"), image_size=(32, 32),
        image_origin="upright", action_space=ACTION_SPACE, proprio_keys=PROPRIO_KEYS, proprio_dim=4,
        control_hz=80.0, collection_seed=0, code_version="test", tasks=TASKS,
        heldout_layouts={t: [{"layout_id": i, "layout": [0.0]} for i in range(heldout)] for t in TASKS},
        extra={"instructions": {t: f"do {t}" for t in TASKS}, "categories": {t: ["short"] for t in TASKS}},
    )


def layouts_for(train: int, heldout: int) -> dict[str, dict[str, list[np.ndarray]]]:
    return {
        "train": {t: [sample_layout(t, 0, "demos", i) for i in range(train)] for t in TASKS},
        "heldout": {t: [sample_layout(t, 0, "heldout", i) for i in range(heldout)] for t in TASKS},
    }


def test_plan_interleaves_tasks_with_seeds_per_episode_and_checks_layout_counts() -> None:
    meta, layouts = dataset_meta(), layouts_for(2, 1)
    suites = [SuiteParams("seen", "train", None, 2), SuiteParams("shift", "train", 0.5, 1)]
    plan = plan_episodes(suites, meta, layouts, task_categories(meta, ["short"], Path("d")), 3, 1, Path("d"))
    assert [(s.suite, s.task, s.episode) for s in plan] == [
        ("seen", TASKS[0], 0), ("seen", TASKS[1], 0), ("seen", TASKS[0], 1), ("seen", TASKS[1], 1),
        ("shift", TASKS[0], 0), ("shift", TASKS[1], 0)]
    assert [s.video for s in plan] == [True, True, False, False, True, True]
    assert plan[0].seed == episode_seed(3, "seen", TASKS[0], 0) != plan[4].seed  # suites draw different seeds
    assert plan[4].layout == plan[0].layout and plan[4].visual_shift == 0.5  # same layouts, shifted scene
    with pytest.raises(StageError, match="has only 1 heldout layouts"):
        plan_episodes([SuiteParams("unseen", "heldout", None, 2)], meta, layouts, {t: ("short",) for t in TASKS},
                      0, 0, Path("d"))
    with pytest.raises(StageError, match="only declared ones"):
        task_categories(meta, ["long_horizon"], Path("d"))


def test_expert_succeeds_and_random_fails_closed_loop() -> None:
    meta, layouts = dataset_meta(), layouts_for(2, 0)
    plan = plan_episodes([SuiteParams("seen", "train", None, 2)], meta, layouts, {t: ("short",) for t in TASKS}, 0,
                         1, Path("d"))
    settings = SimSettings(simulator="metaworld", policy_cameras=(), video_camera="corner", image_size=32,
                           max_steps=200, video_stride=4)
    expert = run_episodes(load_policy("expert", "metaworld"), plan, settings, 8, 4, 0, 4)
    assert all(r.success and r.failure is None and r.steps == r.steps_to_success for r in expert)
    assert [r.spec.index for r in expert] == list(range(len(plan)))
    video = expert[0].frames
    assert video and len(video) == expert[0].steps // 4 + 1 + (expert[0].steps % 4 > 0)
    random = run_episodes(load_policy("random", "metaworld"), plan, dataclasses.replace(settings, max_steps=80), 8, 4,
                          0, 4)
    assert not any(r.success for r in random) and all(r.failure == "timeout" and r.steps == 80 for r in random)


def test_gif_has_one_frame_per_image(tmp_path: Path) -> None:
    from PIL import Image

    frames = [np.full((16, 16, 3), v, np.uint8) for v in (0, 120, 255)]
    write_gif(tmp_path / "v.gif", frames, fps=20)
    with Image.open(tmp_path / "v.gif") as gif:
        assert gif.n_frames == 3 and gif.size == (16, 16)
