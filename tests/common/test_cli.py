"""Matrix items on the shared command line: typed, validated, reported like params."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest

from common.cli import parse_item
from common.config import ParamsError


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
