"""The vision-tower changes compute what the stock tower computes: one attention call, a stem that sees the image."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from common.vla.build import make_vla
from common.vla.families import FAMILIES, _normalize
from common.vla.model import ACTIONS
from tests.common.test_vla import TINY, WORDS, fixed_batch, spec


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def without_stem(strategy: str = "baseline") -> object:
    base = spec(strategy)
    return dataclasses.replace(base, backbone=dataclasses.replace(base.backbone, tiny=dataclasses.replace(TINY, stem=())))


def test_batched_vision_attention_matches_the_per_image_path() -> None:
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionAttention

    model = make_vla(without_stem(), 0, instructions=WORDS).eval()
    batch = fixed_batch(model, size=3)
    batched = model(batch)[ACTIONS]
    for block in model.backbone.vlm.model.visual.blocks:
        assert type(block.attn).__name__ == "BatchedVisionAttention"
        block.attn.__class__ = Qwen3VLVisionAttention  # the stock forward: one SDPA call per image
    torch.testing.assert_close(model(batch)[ACTIONS], batched, rtol=0, atol=1e-6)


def test_stem_reassembles_the_processor_patches_into_the_image() -> None:
    model = make_vla(spec("baseline"), 0, instructions=WORDS)
    processor, stem = model.backbone.processor, model.backbone.vlm.model.visual.patch_embed
    images = torch.rand(3, 2, 3, 16, 16)  # (B, cameras, C, H, W)
    patches = FAMILIES["qwen3_vl"].pixel_inputs(processor, images)["pixel_values"]
    torch.testing.assert_close(stem.to_images(patches), _normalize(processor, images.flatten(0, 1), 16))


def test_stem_output_follows_the_patch_order() -> None:
    """The embedding at processor position (row block, col block, row in block, col in block) is the stem's feature
    at that place of the image."""
    model = make_vla(spec("baseline"), 0, instructions=WORDS).eval()
    processor, embed = model.backbone.processor, model.backbone.vlm.model.visual.patch_embed
    images = torch.rand(2, 1, 3, 16, 16)
    got = embed(FAMILIES["qwen3_vl"].pixel_inputs(processor, images)["pixel_values"])
    features = embed.stem(_normalize(processor, images.flatten(0, 1), 16))  # (N, W, g, g)
    g, m = embed.grid, embed.merge
    expected = [embed.proj(features[n, :, a * m + i, b * m + j])
                for n in range(2) for a in range(g // m) for b in range(g // m) for i in range(m) for j in range(m)]
    torch.testing.assert_close(got, torch.stack(expected))


def test_stem_must_reduce_by_the_patch_size() -> None:
    problems = dataclasses.replace(TINY, stem=(8, 16)).problems()
    assert [p.field for p in problems] == ["stem"]


def test_smolvlm_refuses_a_stem() -> None:
    smol = spec("baseline", family="smolvlm")
    with_stem = dataclasses.replace(smol, backbone=dataclasses.replace(smol.backbone, tiny=TINY))
    with pytest.raises(ValueError, match="qwen3_vl only"):
        make_vla(with_stem, 0, instructions=WORDS)


def test_a_saved_stem_checkpoint_loads_through_the_pretrained_path(tmp_path) -> None:
    """A checkpoint this project saved (a stem in its vision config) loads as `preset: pretrained` with every weight."""
    source = make_vla(spec("baseline"), 0, instructions=WORDS).backbone
    source.vlm.save_pretrained(tmp_path)
    from common.vla.backbone import load_pretrained_vlm

    loaded = load_pretrained_vlm(str(tmp_path), FAMILIES["qwen3_vl"])
    assert type(loaded.model.visual.patch_embed).__name__ == "StemPatchEmbed"
    expected = source.vlm.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
