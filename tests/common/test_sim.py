from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.simulators.metaworld.scene import MetaWorldSim, sample_layout

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sim() -> MetaWorldSim:
    sim = MetaWorldSim("box-close-v3", ("corner", "gripperPOV"), 24)
    yield sim
    sim.close()


def test_layouts_are_reproducible_and_pools_are_disjoint(sim: MetaWorldSim) -> None:
    first = sample_layout("box-close-v3", 0, "demos", 1)
    np.testing.assert_array_equal(first, sim.draw_layout(0, "demos", 1))  # any env, same layout
    np.testing.assert_array_equal(first, sample_layout("box-close-v3", 0, "demos", 1))
    assert not np.array_equal(first, sample_layout("box-close-v3", 0, "heldout", 1))
    assert not np.array_equal(first, sample_layout("box-close-v3", 1, "demos", 1))


def test_reset_to_a_layout_that_the_task_redraws_returns(sim: MetaWorldSim) -> None:
    # box-close re-draws layouts whose lid and box are too close; layout 1 of seed 0 is one such draw. Resetting
    # to a frozen uniform sample of it would loop forever; drawn through the task's reset it returns.
    obs = sim.reset(sim.draw_layout(0, "demos", 1))
    assert obs.shape[0] >= 4 and np.isfinite(obs).all()


def test_render_gives_one_uint8_image_per_camera_deterministically(sim: MetaWorldSim) -> None:
    sim.reset(sim.draw_layout(0, "demos", 0))
    first = sim.render()
    assert set(first) == {"corner", "gripperPOV"}
    assert all(img.shape == (24, 24, 3) and img.dtype == np.uint8 for img in first.values())
    sim.reset(sim.draw_layout(0, "demos", 0))
    for camera, image in sim.render().items():
        np.testing.assert_array_equal(image, first[camera])


def test_the_evaluation_renders_in_a_shell_without_mujoco_settings() -> None:
    """`dvc repro` from a plain shell: no MUJOCO_GL or PYOPENGL_PLATFORM set, the evaluation's modules imported
    first (the visual shift imports mujoco); rendering must still pick the headless back-end."""
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    code = ("import common.evaluation.worker\n"
            "import common.simulators.metaworld.shift\n"
            "from common.simulators.metaworld.scene import MetaWorldSim, sample_layout\n"
            "sim = MetaWorldSim('drawer-open-v3', ('corner',), 32)\n"
            "sim.reset(sample_layout('drawer-open-v3', 0, 'demos', 0))\n"
            "print(sim.render()['corner'].shape)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "(32, 32, 3)"
