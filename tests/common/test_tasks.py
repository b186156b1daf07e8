from __future__ import annotations

import pytest
from metaworld.env_dict import ALL_V3_ENVIRONMENTS
from metaworld.policies import ENV_POLICY_MAP

from common.simulators import get_simulator, task_info
from common.simulators.metaworld.tasks import CATEGORIES, MT50


def test_every_mt50_task_has_an_instruction_categories_and_an_expert() -> None:
    assert set(MT50) == set(ALL_V3_ENVIRONMENTS) == set(ENV_POLICY_MAP)
    for name, info in MT50.items():
        assert info.instruction and info.instruction == info.instruction.lower().strip(), name
        assert info.categories and set(info.categories) <= set(CATEGORIES), name
    assert len({info.instruction for info in MT50.values()}) == 50  # no two tasks share a sentence


def test_unknown_task_suggests_the_closest_name() -> None:
    with pytest.raises(ValueError, match="Did you mean 'drawer-open-v3'"):
        task_info(get_simulator("metaworld"), "drawer-opne-v3")
