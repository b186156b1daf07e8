"""The supervision strategies behind one registry (the study's five; values below for K = 8, C = 4).

| strategy  | latent                 | placeholders | to the action head        | extra loss                          |
|-----------|------------------------|--------------|---------------------------|-------------------------------------|
| baseline  | none                   | PK (P=5)     | all                       | none                                |
| la_align  | LAM code vectors       | PK (P=5)     | last K                    | 1 - cos(proj(mid layer), mean code) |
| la_direct | LAM codes <ACT_i>      | CK           | all, pooled per C to K    | CE on all CK                        |
| la_cond   | LAM codes <ACT_i>      | CK + K       | all                       | CE on the first CK                  |
| la_tok    | action VQ tokens <LA_i>| tokens/chunk | all                       | CE on all                           |
P is `finetune.placeholders_per_step` (the study's 5; la_align needs at least 2).

Each strategy is one `Strategy` (common/vla/strategies/base.py) in its own module of this package, registered with
`@register`; every module here is imported when the package is, so a new strategy is a new file plus its
`strategy_cfg.<name>` params section. Its weights load into its own dataclass, so a token weight under `baseline`
is an unknown key, not a silent no-op.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from common.config import closest_name
from common.vla.strategies.base import (ACTION_TOKEN, LAM_TOKEN, PLACEHOLDER, LatentKind, Layout, Strategy,
                                        non_negative)

__all__ = ["ACTION_TOKEN", "LAM_TOKEN", "PLACEHOLDER", "STRATEGIES", "LatentKind", "Layout", "Strategy", "discover",
           "every_latent_token", "get_strategy", "non_negative", "register"]
STRATEGIES: dict[str, Strategy] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: registers one instance of `cls` under `cls.name`."""
    if cls.name in STRATEGIES:
        raise ValueError(f"strategy {cls.name!r} is registered twice ({type(STRATEGIES[cls.name]).__module__} and "
                         f"{cls.__module__}): give the new one another name")
    STRATEGIES[cls.name] = cls()
    return cls


def get_strategy(name: str) -> Strategy:
    """The registered strategy; an unknown name raises with the closest match."""
    if name not in STRATEGIES:
        match = closest_name(name, STRATEGIES)
        hint = f" Did you mean '{match}'?" if match else ""
        raise KeyError(f"unknown strategy {name!r}.{hint} Known: {sorted(STRATEGIES)}")
    return STRATEGIES[name]


def every_latent_token(latent_meta: dict[LatentKind, dict[str, Any]]) -> tuple[str, ...]:
    """The placeholder and every token any registered strategy adds, each once, given each latent kind's metadata:
    the vocabulary of a start shared by all strategies (the pretrain stage's), so their token ids coincide."""
    tokens = [PLACEHOLDER]
    for strategy in STRATEGIES.values():
        tokens += [t for t in strategy.vocabulary(latent_meta[strategy.latent]) if t not in tokens]
    return tuple(tokens)


def discover() -> None:
    """Import every module of this package (in file-name order): each registers the strategies it defines."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


discover()
