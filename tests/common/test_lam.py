from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from common.lam.data import FramePairs
from common.lam.evaluate import (
    code_statistics,
    derangement,
    encode_pairs,
    episode_bootstrap_ci,
    latent_code_statistics,
)
from common.lam.features import Dinov2Patches, FeatureError, PixelPatches
from common.lam.model import LamModelParams, LatentActionModel
from common.lam.objective import LamWithActionHead, lam_loss
from common.tracking import StageRun, TrackingParams
from common.train import TrainParams, train
from tests.synthetic import write_moving_square_dataset

TINY = LamModelParams(
    input="pixels", dinov2="", patch_size=4, dim=32, heads=2, encoder_layers=1, decoder_layers=1,
    codes_per_transition=2, codebook_size=8, code_dim=8, quantizer="per_query", code_metric="cosine", ema_decay=0.9,
    commitment_weight=0.25, dead_code_threshold=2.0,
)
OFF = StageRun("test", {}, TrackingParams(False, "", "t"))


def train_params(steps: int, **changes: object) -> TrainParams:
    base = dict(steps=steps, batch_size=16, lr=1e-3, weight_decay=0.0, warmup_steps=1, schedule="constant",
                grad_clip=1.0, precision="fp32", log_every=10, checkpoint_every=2, seed=0)
    return TrainParams(**{**base, **changes})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def squares(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_moving_square_dataset(tmp_path_factory.mktemp("lam") / "demos.hdf5", episodes=24, length=16)


def build(seed: int = 0, params: LamModelParams = TINY) -> LamWithActionHead:
    torch.manual_seed(seed)
    return LamWithActionHead(LatentActionModel(params, 16), gap=1, action_dim=4, weight=0.5, fraction=0.25)


def test_decoder_needs_the_latent_on_frames_driven_by_a_hidden_action(squares: Path, tmp_path: Path) -> None:
    pairs = FramePairs.load(squares, "train", "corner", 1, "quantile", val_fraction=0.1)
    val = FramePairs.load(squares, "val", "corner", 1, "quantile", val_fraction=0.1)
    model = build()
    train(model, lam_loss, lambda s, p: pairs.sample(0, s, p, 32), train_params(300, checkpoint_every=1000),
          tmp_path / "ckpt", "leak", OFF)
    out = encode_pairs(model.lam, val, np.arange(len(val)), seed=0)
    # With another pair's latent the square lands in the wrong place: the error must clearly grow.
    assert out["error_other"].mean() > 1.5 * out["error"].mean()
    assert code_statistics(out["codes"], TINY.codebook_size)["code_usage"] >= 0.5


def test_dead_codes_are_reseeded_continuously() -> None:
    lam = build().lam.train()
    vq = lam.vq
    vq(torch.randn(64, 2, TINY.code_dim))  # k-means init happens on the first batch
    with torch.no_grad():  # collapse the codebook: every code far away, cluster sizes at zero
        vq._codebook.embed.fill_(50.0)
        vq._codebook.embed[..., 0, :] = 0.0
        vq._codebook.embed_avg.copy_(vq._codebook.embed)
        vq._codebook.cluster_size.zero_()
    used_before = vq(torch.randn(256, 2, TINY.code_dim))[1].unique().numel()
    for _ in range(5):
        vq(torch.randn(256, 2, TINY.code_dim))
    used_after = vq(torch.randn(256, 2, TINY.code_dim))[1].unique().numel()
    assert used_before <= 2 and used_after >= TINY.codebook_size - 1


def test_resume_after_two_steps_equals_four_straight_steps(squares: Path, tmp_path: Path) -> None:
    pairs = FramePairs.load(squares, "train", "corner", 1, "quantile", val_fraction=0.1)
    batch_at = lambda s, p: pairs.sample(0, s, p, 16)  # noqa: E731
    straight = build()
    train(straight, lam_loss, batch_at, train_params(4), tmp_path / "a", "fp", OFF)
    interrupted = build()
    first = train(interrupted, lam_loss, batch_at, train_params(4), tmp_path / "b", "fp", OFF, stop_after=2)
    assert first.steps == 2 and sorted(p.name for p in (tmp_path / "b").iterdir()) == ["step_00000002"]
    resumed = build(seed=123)  # fresh weights: everything must come from the checkpoint
    second = train(resumed, lam_loss, batch_at, train_params(4), tmp_path / "b", "fp", OFF)
    assert second.resumed_from == 2
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    # A checkpoint made under another fingerprint (other params or data), or past the steps asked for, is not
    # resumed.
    other = train(build(), lam_loss, batch_at, train_params(4), tmp_path / "b", "other", OFF, stop_after=1)
    assert other.resumed_from == 0
    shorter = train(build(), lam_loss, batch_at, train_params(3), tmp_path / "b", "fp", OFF, stop_after=1)
    assert shorter.resumed_from == 0


def test_images_smaller_than_a_patch_or_not_divisible_are_clear_errors() -> None:
    with pytest.raises(FeatureError, match="smaller than one 16px patch"):
        PixelPatches(8, 16)
    with pytest.raises(FeatureError, match="do not split into 6px patches"):
        PixelPatches(16, 6)


def test_frozen_dinov2_features_from_a_local_folder(tmp_path: Path) -> None:
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                          patch_size=4, image_size=16)
    Dinov2Model(config).save_pretrained(tmp_path / "dino")
    params = dataclasses.replace(TINY, input="dinov2", dinov2=str(tmp_path / "dino"))
    lam = LatentActionModel(params, 16)
    assert isinstance(lam.features, Dinov2Patches)
    assert (lam.features.num_tokens, lam.features.feature_dim) == (16, 16)
    frames = torch.randint(0, 256, (3, 16, 16, 3), dtype=torch.uint8)
    out = lam(frames, frames.flip(1))
    assert out.prediction.shape == out.target.shape == (3, 16, 16)
    assert not any(p.requires_grad for p in lam.features.parameters())
    with pytest.raises(FeatureError, match=r"(?s)cannot load DINOv2.*input: pixels"):
        LatentActionModel(dataclasses.replace(params, dinov2="no-such-org/no-such-dinov2"), 16)


def test_statistics_helpers() -> None:
    source = derangement(50, seed=1)
    assert sorted(source) == list(range(50)) and not np.any(source == np.arange(50))
    assert code_statistics(np.array([0, 1, 2, 3]), 8) == {"code_usage": 0.5, "perplexity": pytest.approx(4.0)}
    values = np.r_[np.ones(50), np.zeros(50)]
    low, high = episode_bootstrap_ci(values, np.repeat(np.arange(10), 10), resamples=500, seed=0)
    assert low < 0.5 < high


RESIDUAL = dataclasses.replace(TINY, quantizer="residual", code_metric="euclidean")


def test_residual_levels_sum_to_the_quantized_latent(squares: Path) -> None:
    pairs = FramePairs.load(squares, "train", "corner", 1, "quantile", val_fraction=0.1)
    lam = LatentActionModel(RESIDUAL, 16)
    batch = pairs.sample(0, 0, 0, 32)
    lam(batch["frame_t"], batch["frame_next"])  # k-means initialisation of every level
    lam.eval()
    with torch.no_grad():
        out = lam(batch["frame_t"], batch["frame_next"])
        levels = lam.vq.get_codes_from_indices(out.codes[:, None])  # (Q, B, 1, C)
    assert out.codes.shape == (32, RESIDUAL.codes_per_transition)
    assert int(out.codes.max()) < RESIDUAL.codebook_size
    torch.testing.assert_close(out.latent, levels[:, :, 0].transpose(0, 1))


def test_residual_latent_carries_the_hidden_action(squares: Path, tmp_path: Path) -> None:
    pairs = FramePairs.load(squares, "train", "corner", 1, "quantile", val_fraction=0.1)
    val = FramePairs.load(squares, "val", "corner", 1, "quantile", val_fraction=0.1)
    model = build(params=RESIDUAL)
    train(model, lam_loss, lambda s, p: pairs.sample(0, s, p, 32), train_params(300, checkpoint_every=1000),
          tmp_path / "ckpt", "leak-residual", OFF)
    out = encode_pairs(model.lam, val, np.arange(len(val)), seed=0)
    assert out["error_other"].mean() > 1.5 * out["error"].mean()
    assert latent_code_statistics(out["codes"], RESIDUAL)["code_usage"] >= 0.5


def test_residual_needs_euclidean_codes() -> None:
    assert any(p.field == "code_metric" for p in dataclasses.replace(RESIDUAL, code_metric="cosine").problems())
