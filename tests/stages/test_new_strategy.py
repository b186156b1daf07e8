"""A sixth strategy is one new module and its params section: discovered, configured, trained and saved by the
unchanged finetune stage."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterator

import pytest

import common.vla.strategies as strategies
from common.cli import parse_item
from common.config import ParamsError
from stages.finetune import LAM_CODES, Item, outputs
from stages.finetune.__main__ import load_strategy_cfg, main
from tests.stages.test_finetune import CODEBOOK, CODES, DEMOS, OFF, TINY, dataset, link, tiny  # noqa: F401

NAME = "la_first"
# The whole of the new strategy: the LAM's codes of the first transition only, then K placeholders for the head.
MODULE = '''
import dataclasses

from common.vla.strategies import Layout, non_negative, register
from common.vla.strategies.tokens import LamTokenStrategy


@dataclasses.dataclass(frozen=True)
class FirstCfg:
    action_weight: float
    token_weight: float

    def problems(self):
        return non_negative(self)


@register
class LaFirst(LamTokenStrategy):
    name, cfg = "la_first", FirstCfg

    def layout(self, chunk, latent_meta, per_step):
        codes = int(latent_meta["codes_per_transition"])
        return Layout(placeholders=codes + chunk, token_slots=codes, align_slots=0, head_from=codes, pool=1)
'''


@pytest.fixture
def new_strategy(tmp_path: Path) -> Iterator[None]:
    """`la_first.py` in a folder of the strategies package, found by the package's own discovery; removed after."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / f"{NAME}.py").write_text(MODULE)
    strategies.__path__.append(str(folder))
    try:
        strategies.discover()
        yield
    finally:
        strategies.__path__.remove(str(folder))
        strategies.STRATEGIES.pop(NAME, None)
        sys.modules.pop(f"{strategies.__name__}.{NAME}", None)


def test_a_sixth_strategy_trains_through_the_unchanged_stage(new_strategy: None, dataset: Path,
                                                              tmp_path: Path) -> None:
    assert NAME in strategies.STRATEGIES and len(strategies.STRATEGIES) == 6
    params = tmp_path / "params.yaml"
    params.write_text(f"strategy_cfg:\n  {NAME}: {{action_weight: 1.0, token_weight: 0.5}}\n")
    cfg = load_strategy_cfg(params, NAME)  # its own params section, in its own dataclass
    item = parse_item(Item, {"strategy": NAME, "seed": "0"})  # the command line accepts it
    assert item.latent_file() == LAM_CODES  # the DVC dep follows its latent kind
    root = link(dataset, tmp_path / "root", DEMOS, LAM_CODES)
    metrics = main(tiny(train={**TINY["train"], "steps": 2}), OFF, root, item, cfg)
    assert metrics["train_steps"] == 2 and 0 <= metrics["val_token_acc"] <= 1
    meta = json.loads((root / outputs(item)[0] / "meta.json").read_text())
    assert (meta["strategy"], meta["strategy_cfg"]) == (NAME, {"action_weight": 1.0, "token_weight": 0.5})
    chunk = TINY["chunk"]
    assert meta["layout"] == {"placeholders": CODES + chunk, "token_slots": CODES, "align_slots": 0,
                              "head_from": CODES, "pool": 1}
    assert len(meta["vocabulary"]) == 1 + CODEBOOK  # the placeholder + <ACT_i>


def test_without_its_module_the_strategy_is_unknown_everywhere(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=f"item.strategy = '{NAME}': must be one of"):
        parse_item(Item, {"strategy": NAME, "seed": "0"})
    with pytest.raises(KeyError, match=f"unknown strategy '{NAME}'"):
        strategies.get_strategy(NAME)


def test_each_shipped_strategy_lives_in_the_module_named_after_it() -> None:
    assert "baseline" in strategies.STRATEGIES
    for name, strategy in strategies.STRATEGIES.items():
        assert type(strategy).__module__ == f"common.vla.strategies.{name}"
