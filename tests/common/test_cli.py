"""Matrix items on the shared command line: typed, validated, reported like params."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from common.cli import parse_item
from common.config import ParamsError

REPO = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Item:
    strategy: Literal["baseline", "la_tok"]
    seed: int


def test_item_is_typed() -> None:
    assert parse_item(Item, {"strategy": "la_tok", "seed": "3"}) == Item("la_tok", 3)


def test_bad_item_names_flag_and_value() -> None:
    with pytest.raises(ParamsError, match="seed"):
        parse_item(Item, {"strategy": "la_tok", "seed": "x"})
    with pytest.raises(ParamsError, match="la_tk"):
        parse_item(Item, {"strategy": "la_tk", "seed": "0"})


def test_a_missing_params_file_is_one_problem_with_a_fix_other_than_the_flag_just_given(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = subprocess.run([sys.executable, "-m", "stages.report", "--params", str(missing)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("no such file") == 1 and "1 problem(s)" in result.stderr
    assert str(missing) in result.stderr and "pass --params" not in result.stderr
