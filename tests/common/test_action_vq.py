from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from common.action_vq.data import CHUNKS, chunk_episode
from common.action_vq.evaluate import reconstruction_errors, tokenize
from common.action_vq.model import ActionTokenizer, TokenizerParams, chunk_features
from common.action_vq.objective import TokenizerObjective, tokenizer_loss
from common.demos import Stats
from common.tracking import StageRun, TrackingParams
from common.train import TrainParams, train

TINY = TokenizerParams(
    quantizer="vq", steps_per_token=1, dim=32, heads=2, layers=1, decoder="token_mlp", code_dim=8, codebook_size=32,
    residual_levels=1, fsq_levels=[5, 5, 5], ema_decay=0.9, commitment_weight=0.25, dead_code_threshold=1.0,
    mask_ratio=0.15, mask_weight=1.0,
)
OFF = StageRun("test", {}, TrackingParams(False, "", "t"))


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)  # as the stages run (see stages/action_vq/__main__.py)


def train_params(steps: int, **changes: object) -> TrainParams:
    base = dict(steps=steps, batch_size=64, lr=2e-3, weight_decay=0.0, warmup_steps=10, schedule="constant",
                grad_clip=1.0, precision="fp32", log_every=50, checkpoint_every=1000, seed=0)
    return TrainParams(**{**base, **changes})  # type: ignore[arg-type]


def smooth_chunks(count: int, chunk: int, seed: int) -> np.ndarray:
    """Chunks of a slow sinusoid at a random phase, one amplitude and offset per action dimension: (count, chunk, 4)."""
    rng = np.random.default_rng(seed)
    t = np.arange(chunk)[None, :, None] / chunk
    phase = rng.uniform(0, 2 * np.pi, (count, 1, 1))
    amplitude, offset = np.array([0.9, -0.6, 0.3, 0.5]), np.array([0.0, 0.2, -0.5, 0.4])
    return (amplitude * np.sin(2 * np.pi * 0.25 * t + phase) + offset).astype(np.float32)


def build(params: TokenizerParams = TINY, chunk: int = 8, seed: int = 0) -> TokenizerObjective:
    torch.manual_seed(seed)
    return TokenizerObjective(ActionTokenizer(params, chunk, 4))


def test_chunks_start_at_every_step_and_repeat_the_last_action_past_the_end() -> None:
    actions = np.arange(10, dtype=np.float32).reshape(5, 2)
    chunks, pad = chunk_episode(actions, 3)
    assert chunks.shape == (5, 3, 2) and pad.shape == (5, 3)
    np.testing.assert_array_equal(chunks[3, :, 0], [6, 8, 8])
    np.testing.assert_array_equal(chunks[4, :, 1], [9, 9, 9])
    assert pad.sum(1).tolist() == [0, 0, 0, 1, 2]


def test_fft_features_are_the_chunk_and_its_spectrum() -> None:
    chunk = torch.randn(2, 8, 4)
    features = chunk_features(chunk)
    assert features.shape == (2, 8, 12)
    spectrum = torch.complex(features[..., 4:8], features[..., 8:])
    torch.testing.assert_close(torch.fft.ifft(spectrum, dim=1, norm="ortho").real, chunk)


RESIDUAL = dataclasses.replace(TINY, residual_levels=2)


@pytest.mark.parametrize("params", [TINY, dataclasses.replace(TINY, quantizer="fsq"), RESIDUAL],
                         ids=["vq", "fsq", "residual"])
def test_a_smooth_signal_reconstructs_under_a_bound(params: TokenizerParams, tmp_path: Path) -> None:
    data, held = smooth_chunks(4096, 8, seed=0), smooth_chunks(512, 8, seed=1)
    model = build(params)
    batch_at = lambda s, p: {CHUNKS: torch.from_numpy(data[np.random.default_rng([0, s]).integers(0, 4096, 64)])}  # noqa: E731
    train(model, tokenizer_loss, batch_at, train_params(200), tmp_path, "smooth", OFF)
    out = tokenize(model.tokenizer, held)
    mse = float(((out["reconstruction"] - held) ** 2).mean())
    assert mse < 0.01, mse  # the signal's variance is about 0.19: 19x below it
    assert out["tokens"].shape == (512, 8 // params.steps_per_token * params.residual_levels)
    assert out["tokens"].min() >= 0 and out["tokens"].max() < params.vocab_size


def test_residual_tokens_decode_back_to_their_vectors() -> None:
    tokenizer = build(RESIDUAL).tokenizer
    chunk = torch.from_numpy(smooth_chunks(64, 8, seed=0))
    tokenizer(chunk)  # k-means initialisation of both levels
    tokenizer.eval()
    with torch.no_grad():
        out = tokenizer(chunk)
        assert out.tokens.shape == (64, 16) and tokenizer.tokens_per_chunk == 16
        torch.testing.assert_close(tokenizer.tokens_to_vectors(out.tokens), out.vectors)
    assert any(p.field == "residual_levels" for p in dataclasses.replace(RESIDUAL, quantizer="fsq").problems())


def test_resume_after_two_steps_equals_four_straight_steps(tmp_path: Path) -> None:
    data = smooth_chunks(256, 8, seed=0)
    batch_at = lambda s, p: {CHUNKS: torch.from_numpy(data[np.random.default_rng([0, s, p]).integers(0, 256, 64)])}  # noqa: E731
    params = train_params(4, checkpoint_every=2)
    straight = build()
    train(straight, tokenizer_loss, batch_at, params, tmp_path / "a", "fp", OFF)
    interrupted = build()
    assert train(interrupted, tokenizer_loss, batch_at, params, tmp_path / "b", "fp", OFF, stop_after=2).steps == 2
    resumed = build(seed=123)  # fresh weights and codebook: everything must come from the checkpoint
    assert train(resumed, tokenizer_loss, batch_at, params, tmp_path / "b", "fp", OFF).resumed_from == 2
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_errors_are_scored_in_action_units_on_real_steps_only() -> None:
    stats = Stats(mean=np.zeros(2), std=np.ones(2), min=np.array([0.0, -2.0]), max=np.array([10.0, 2.0]),
                  q01=np.array([0.0, -2.0]), q99=np.array([10.0, 2.0]))
    raw = np.array([[[5.0, 0.0], [5.0, 0.0]]], np.float32)  # (1, K=2, A=2); normalized: [0, 0]
    recon = np.array([[[0.1, 0.0], [0.9, 0.5]]], np.float32)  # second step is padding: its error is ignored
    errors = reconstruction_errors(recon, raw, np.array([[False, True]]), stats, "minmax", ("a", "b"))
    assert errors["per_dimension"]["a"]["max_abs"] == pytest.approx(0.5)  # 0.1 of half the 10-wide range
    assert errors["per_dimension"]["a"]["max_abs_share_of_range"] == pytest.approx(0.05)
    assert errors["per_dimension"]["b"]["mse"] == 0.0 and errors["scored_steps"] == 1
