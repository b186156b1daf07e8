"""The learning-rate schedules and what a checkpoint must share to be resumed."""

from __future__ import annotations

import dataclasses

import pytest

from common.train import TrainParams, lr_factor, resume_fields

BASE = TrainParams(steps=110, batch_size=4, lr=1e-3, weight_decay=0.0, warmup_steps=10, schedule="cosine",
                   grad_clip=1.0, precision="fp32", log_every=5, checkpoint_every=50, seed=0)


def test_cosine_warms_up_then_decays_to_zero_at_the_last_step() -> None:
    factors = [lr_factor(BASE, s) for s in range(BASE.steps)]
    assert factors[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert factors[59] == pytest.approx(0.5)  # half-way through the 100 decay steps
    assert factors[-1] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))


def test_constant_keeps_the_peak_after_warm_up() -> None:
    constant = dataclasses.replace(BASE, schedule="constant")
    assert [lr_factor(constant, s) for s in (0, 9, 10, 109, 500)] == pytest.approx([0.1, 1, 1, 1, 1])


def test_a_cosine_checkpoint_is_tied_to_its_step_count_a_constant_one_is_not() -> None:
    longer = dataclasses.replace(BASE, steps=220, log_every=1, checkpoint_every=7)
    assert resume_fields(BASE) != resume_fields(longer)
    assert resume_fields(dataclasses.replace(BASE, schedule="constant")) == resume_fields(
        dataclasses.replace(longer, schedule="constant"))
