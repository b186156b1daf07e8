"""The five supervision strategies behind one registry (REFERENCE section 3; values below for K = 8, C = 4).

| strategy  | latent                 | placeholders | to the action head        | extra loss                          |
|-----------|------------------------|--------------|---------------------------|-------------------------------------|
| baseline  | none                   | PK (P=5)     | all                       | none                                |
| la_align  | LAM code vectors       | PK (P=5)     | last K                    | 1 - cos(proj(mid layer), mean code) |
| la_direct | LAM codes <ACT_i>      | CK           | all, pooled per C to K    | CE on all CK                        |
| la_cond   | LAM codes <ACT_i>      | CK + K       | all                       | CE on the first CK                  |
| la_tok    | action VQ tokens <LA_i>| tokens/chunk | all                       | CE on all                           |
P is `finetune.placeholders_per_step` (the study's 5; la_align needs at least 2).

A strategy only describes its prompt layout and which latent it reads; the one training loop (common/vla/model.py)
applies the losses. Each strategy's weights live in `strategy_cfg.<name>` and load into its own dataclass, so a
token weight under `baseline` is an unknown key, not a silent no-op.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal

import torch

from common.config import Problem, closest_name

LatentKind = Literal["none", "lam", "action_vq"]
PLACEHOLDER = "<|act_query|>"
LAM_TOKEN, ACTION_TOKEN = "<ACT_{}>", "<LA_{}>"


def _non_negative(obj: Any) -> list[Problem]:
    return [Problem(f.name, getattr(obj, f.name), "must not be negative", "use 0 or more")
            for f in dataclasses.fields(obj) if getattr(obj, f.name) < 0]


@dataclasses.dataclass(frozen=True)
class PlainCfg:
    """`strategy_cfg.baseline`: only the action loss."""

    action_weight: float

    def problems(self) -> list[Problem]:
        """Range checks."""
        return _non_negative(self)


@dataclasses.dataclass(frozen=True)
class AlignCfg:
    """`strategy_cfg.la_align`: the action loss plus the cosine alignment to the LAM's code vectors."""

    action_weight: float
    align_weight: float
    align_hidden: int  # width of the projector's hidden layer (the study: 256)

    def problems(self) -> list[Problem]:
        """Range checks."""
        return _non_negative(self) + ([Problem("align_hidden", self.align_hidden, "must be at least 1", "e.g. 256")]
                                      if self.align_hidden < 1 else [])


@dataclasses.dataclass(frozen=True)
class TokenCfg:
    """`strategy_cfg.<la_direct|la_cond|la_tok>`: the action loss plus token cross-entropy."""

    action_weight: float
    token_weight: float

    def problems(self) -> list[Problem]:
        """Range checks."""
        return _non_negative(self)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where things sit among a prompt's placeholders."""

    placeholders: int  # placeholder tokens after the instruction
    token_slots: int  # the leading placeholders a token loss supervises (0: none)
    align_slots: int  # the leading placeholders pooled for alignment (0: none)
    head_from: int  # the head reads placeholders[head_from:]
    pool: int  # average each group of `pool` head placeholders (1: none)


@dataclasses.dataclass(frozen=True)
class Strategy:
    """One variant: its latent, its params class, and its layout for a chunk length and latent metadata."""

    name: str
    latent: LatentKind
    cfg: type
    layout: Callable[[int, dict[str, Any], int], Layout]  # (chunk, latent meta, placeholders per step) -> layout

    def vocabulary(self, latent_meta: dict[str, Any]) -> tuple[str, ...]:
        """The latent tokens this strategy adds to the tokenizer (none for baseline and la_align)."""
        if self.latent == "lam" and self.layout(1, latent_meta, 2).token_slots:
            return tuple(LAM_TOKEN.format(i) for i in range(int(latent_meta["codebook_size"])))
        if self.latent == "action_vq":
            return tuple(ACTION_TOKEN.format(i) for i in range(int(latent_meta["vocab_size"])))
        return ()

    def head_inputs(self, placeholders: torch.Tensor, layout: Layout) -> torch.Tensor:
        """(B, n, D) placeholder states -> what the action head reads (B, m, D)."""
        picked = placeholders[:, layout.head_from :]
        if layout.pool > 1:
            batch, count, dim = picked.shape
            picked = picked.view(batch, count // layout.pool, layout.pool, dim).mean(2)
        return picked


STRATEGIES: dict[str, Strategy] = {}


LayoutFn = Callable[[int, dict[str, Any], int], Layout]


def register(name: str, latent: LatentKind, cfg: type) -> Callable[[LayoutFn], Strategy]:
    """Decorator: `@register("la_tok", "action_vq", TokenCfg)` on a layout function makes a strategy."""

    def wrap(layout: LayoutFn) -> Strategy:
        if name in STRATEGIES:
            raise ValueError(f"strategy {name!r} is registered twice")
        STRATEGIES[name] = Strategy(name, latent, cfg, layout)
        return STRATEGIES[name]

    return wrap


def get_strategy(name: str) -> Strategy:
    """The registered strategy; an unknown name raises with the closest match."""
    if name not in STRATEGIES:
        match = closest_name(name, STRATEGIES)
        hint = f" Did you mean '{match}'?" if match else ""
        raise KeyError(f"unknown strategy {name!r}.{hint} Known: {sorted(STRATEGIES)}")
    return STRATEGIES[name]


# `per_step` (finetune.placeholders_per_step) sizes the placeholder budget of the strategies that have no latent
# tokens to fill it with: baseline and la_align (the study: 5, i.e. 5K).
@register("baseline", "none", PlainCfg)
def _baseline(chunk: int, meta: dict[str, Any], per_step: int) -> Layout:
    n = per_step * chunk
    return Layout(placeholders=n, token_slots=0, align_slots=0, head_from=0, pool=1)


@register("la_align", "lam", AlignCfg)
def _la_align(chunk: int, meta: dict[str, Any], per_step: int) -> Layout:
    if per_step < 2:
        raise ValueError(f"la_align aligns the first (placeholders_per_step - 1) x K placeholders and reads the last "
                         f"K: placeholders_per_step = {per_step} leaves none to align; use 2 or more")
    n = per_step * chunk
    return Layout(placeholders=n, token_slots=0, align_slots=n - chunk, head_from=n - chunk, pool=1)


@register("la_direct", "lam", TokenCfg)
def _la_direct(chunk: int, meta: dict[str, Any], per_step: int) -> Layout:
    codes = int(meta["codes_per_transition"])
    return Layout(placeholders=codes * chunk, token_slots=codes * chunk, align_slots=0, head_from=0, pool=codes)


@register("la_cond", "lam", TokenCfg)
def _la_cond(chunk: int, meta: dict[str, Any], per_step: int) -> Layout:
    codes = int(meta["codes_per_transition"])
    return Layout(placeholders=codes * chunk + chunk, token_slots=codes * chunk, align_slots=0, head_from=0, pool=1)


@register("la_tok", "action_vq", TokenCfg)
def _la_tok(chunk: int, meta: dict[str, Any], per_step: int) -> Layout:
    n = int(meta["tokens_per_chunk"])
    return Layout(placeholders=n, token_slots=n, align_slots=0, head_from=0, pool=1)


def every_latent_token(latent_meta: dict[LatentKind, dict[str, Any]]) -> tuple[str, ...]:
    """The placeholder and every token any registered strategy adds, each once, given each latent kind's metadata:
    the vocabulary of a start shared by all strategies (the pretrain stage's), so their token ids coincide."""
    tokens = [PLACEHOLDER]
    for strategy in STRATEGIES.values():
        tokens += [t for t in strategy.vocabulary(latent_meta[strategy.latent]) if t not in tokens]
    return tuple(tokens)
