from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Literal

import pytest
import yaml

from common.config import ParamsError, Problem, from_dict, load_section
from common.study import StudyParams
from common.tracking import TrackingParams
from stages.collect import Params as CollectParams

REPO = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Inner:
    size: int
    mode: Literal["pixels", "dino"]


@dataclasses.dataclass(frozen=True)
class Outer:
    name: str
    rate: float
    flag: bool
    sizes: list[int]
    inner: Inner
    path: Path

    def problems(self) -> list[Problem]:
        return [Problem("rate", self.rate, "must be positive", "use > 0")] if self.rate <= 0 else []


GOOD = {"name": "x", "rate": 1, "flag": True, "sizes": [1, 2], "inner": {"size": 3, "mode": "pixels"}, "path": "a/b"}


def test_valid_section_loads_into_frozen_dataclass() -> None:
    value = from_dict(Outer, GOOD, prefix="outer")
    assert value == Outer("x", 1.0, True, [1, 2], Inner(3, "pixels"), Path("a/b"))
    assert isinstance(value.rate, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        value.name = "y"  # type: ignore[misc]


def test_all_problems_are_reported_together_with_field_value_and_fix() -> None:
    raw = dict(GOOD, rat=2, flag="yes", sizes=[1, "two"], inner={"size": True, "mode": "pixel"})
    del raw["name"]
    with pytest.raises(ParamsError) as info:
        from_dict(Outer, raw, prefix="outer", source="params.yaml")
    fields = {p.field: p for p in info.value.problems}
    assert set(fields) == {"outer.rat", "outer.name", "outer.flag", "outer.sizes[1]", "outer.inner.size",
                           "outer.inner.mode"}
    text = str(info.value)
    assert text.startswith("params.yaml: 6 problem(s)")
    assert "did you mean 'rate'" in text  # unknown key gets the closest known name
    assert "did you mean 'pixels'" in text  # a bad choice gets the closest allowed value
    assert "outer.flag = 'yes': expected true/false" in text
    assert "outer.inner.size = True: expected an integer, got bool" in text  # bool is not an int here
    assert "outer.name = <missing>: required key is missing. Fix: add `name: <text>`" in text


def test_range_checks_run_after_types_pass() -> None:
    with pytest.raises(ParamsError, match=r"outer.rate = -1.0: must be positive. Fix: use > 0"):
        from_dict(Outer, dict(GOOD, rate=-1), prefix="outer")


def test_missing_section_and_file_and_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("colect: {}\n")
    with pytest.raises(ParamsError, match="section is missing.*did you mean 'colect'"):
        load_section(path, "collect", CollectParams)
    with pytest.raises(ParamsError, match="no such file"):
        load_section(tmp_path / "nope.yaml", "collect", CollectParams)
    path.write_text("collect: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_section(path, "collect", CollectParams)


def test_collect_params_semantic_checks(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())["collect"]
    raw.update(tasks=["drawer-opne-v3"], demos_per_task=0, max_episode_steps=900, cameras=["corner", "corner"])
    with pytest.raises(ParamsError) as info:
        from_dict(CollectParams, raw, prefix="collect")
    fields = {p.field for p in info.value.problems}
    assert {"collect.tasks[0]", "collect.demos_per_task", "collect.max_episode_steps", "collect.cameras"} <= fields


def test_every_params_file_in_the_repo_loads() -> None:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    stages = sorted(p.name for p in (REPO / "stages").iterdir() if (p / "__init__.py").is_file())
    shared = {"tracking", "study", "strategy_cfg"}  # read by several stages (strategy_cfg: finetune's per-item sections)
    assert set(data) == shared | set(stages), "a params.yaml section has no stage package (or the reverse)"
    load_section(REPO / "params.yaml", "tracking", TrackingParams)
    load_section(REPO / "params.yaml", "study", StudyParams)
    strategy_cfg = importlib.import_module("stages.finetune.__main__").load_strategy_cfg
    for strategy in data["strategy_cfg"]:
        strategy_cfg(REPO / "params.yaml", strategy)
    for stage in stages:
        load_section(REPO / "params.yaml", stage, importlib.import_module(f"stages.{stage}").Params)
