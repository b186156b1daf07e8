"""The VLA library on tiny backbones of both families: image tokens, every strategy, overfitting, LoRA, registry."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from common.vla.augment import AugmentParams, augment, eval_view, to_float
from common.vla.backbone import BackboneParams, LoraParams
from common.vla.build import VlaSpec, load_vla, make_vla, save_vla
from common.vla.families import TinyParams
from common.vla.head import HeadParams
from common.vla.model import ACTION_MASK, ACTIONS, ALIGN, ATTENTION, IMAGES, INPUT_IDS, PROPRIO, TOKENS, VLA, objective
from common.vla.prompt import left_pad, prompt_text
from common.vla.strategies import STRATEGIES, get_strategy
from common.vla.tokenizer import task_instructions

FAMILIES = ("qwen3_vl", "smolvlm")
WORDS = task_instructions("metaworld")  # what the tiny tokenizers learn from
SIZE, CAMERAS, CHUNK, ACTION_DIM = 16, ("corner", "gripperPOV"), 2, 4
LAM_META = {"kind": "lam", "codebook_size": 8, "codes_per_transition": 2, "code_dim": 6}
VQ_META = {"kind": "action_vq", "chunk": CHUNK, "tokens_per_chunk": CHUNK, "vocab_size": 16, "action_dim": 4}
TINY = TinyParams(hidden=32, layers=2, heads=2, kv_heads=1, intermediate=64, vision_hidden=32, vision_layers=1,
                  vision_heads=2, patch_size=8, vocab_size=300, temporal_patch_size=1,
                  stem=(8, 8, 16))
SMOL_TINY = dataclasses.replace(TINY, stem=())  # the conv stem is Qwen3-VL's patch layout only
WEIGHTS = {"action_weight": 1.0, "token_weight": 1.0, "align_weight": 1.0, "align_hidden": 16}


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    """Tiny models on a shared 2-core machine: one thread is ~10x faster than two fighting other processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def spec(strategy: str, family: str = "qwen3_vl", lora: int = 0, size: int = SIZE) -> VlaSpec:
    meta = {"none": {}, "lam": LAM_META, "action_vq": VQ_META}[get_strategy(strategy).latent]
    return VlaSpec(strategy, CHUNK, ACTION_DIM, 4, CAMERAS, size, meta, 16 if strategy == "la_align" else 0, 2,
                   BackboneParams(family, "tiny", "", 0, TINY if family == "qwen3_vl" else SMOL_TINY,
                                  LoraParams(lora, 16.0, 0.0, "all-linear")),
                   HeadParams(0, 32, 2, 0.0))


def cfg(strategy: str) -> Any:
    cls = get_strategy(strategy).cfg
    return cls(**{k: v for k, v in WEIGHTS.items() if k in cls.__dataclass_fields__})


def fixed_batch(model: VLA, size: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    instructions = ["push the button", "open the drawer", "close the door", "reach the target"]
    rows = [model.backbone.prompt_ids(prompt_text(instructions[i % 4], CHUNK, model.layout.placeholders),
                                      len(CAMERAS), SIZE) for i in range(size)]
    ids, mask = left_pad(rows, model.backbone.tokenizer.pad_token_id)
    images = torch.from_numpy(rng.integers(0, 256, (size, len(CAMERAS), SIZE, SIZE, 3), dtype=np.uint8))
    batch = {INPUT_IDS: ids, ATTENTION: mask, IMAGES: to_float(images),
             PROPRIO: torch.from_numpy(rng.normal(size=(size, 4)).astype(np.float32)),
             ACTIONS: torch.from_numpy(rng.uniform(-1, 1, (size, CHUNK, ACTION_DIM)).astype(np.float32)),
             ACTION_MASK: torch.ones(size, CHUNK, dtype=torch.bool)}
    if model.layout.token_slots:
        batch[TOKENS] = torch.from_numpy(rng.integers(0, 8, (size, model.layout.token_slots)))
    if model.layout.align_slots:
        batch[ALIGN] = torch.from_numpy(rng.normal(size=(size, 6)).astype(np.float32))
    return batch


@pytest.mark.parametrize("family", FAMILIES)
def test_image_tokens_are_found_from_the_processor_ids(family: str) -> None:
    size = 32  # 4x4 patches of 8 px per image: 4 tokens after the 2x2 merge / pixel shuffle
    model = make_vla(spec("baseline", family, size=size), seed=0, instructions=WORDS)
    backbone = model.backbone
    text = prompt_text("push the button", CHUNK, model.layout.placeholders)
    images = np.random.default_rng(0).integers(0, 256, (len(CAMERAS), size, size, 3), dtype=np.uint8)
    reference = backbone.processor(text=[backbone.family.image_text(len(CAMERAS)) + text], images=[list(images)],
                                   return_tensors="pt")
    ids = torch.tensor([backbone.prompt_ids(text, len(CAMERAS), size)])
    assert torch.equal(ids, reference["input_ids"])
    image_positions = (ids[0] == backbone.image_token_id).nonzero().flatten()
    per_image = (size // TINY.patch_size) ** 2 // 4  # 2x2 merge (Qwen) / pixel shuffle with scale 2 (Idefics3)
    assert len(image_positions) == len(CAMERAS) * per_image
    assert backbone.image_token_id != model.placeholder_id
    assert torch.equal(model.placeholder_positions(ids)[0], (ids[0] == model.placeholder_id).nonzero().flatten())
    # The batched torch pixel path equals the family's own processor.
    pixels = backbone.family.pixel_inputs(backbone.processor, to_float(torch.from_numpy(images[None])))
    for key, value in pixels.items():
        assert torch.allclose(value.to(reference[key].dtype), reference[key], atol=1e-5), key


def test_cached_mrope_positions_equal_the_models_own() -> None:
    model = make_vla(spec("la_tok"), seed=0, instructions=WORDS).eval()
    backbone = model.backbone
    batch = fixed_batch(model, size=6)  # left-padded prompts of different lengths; rows 4 and 5 repeat rows 0 and 1
    pixels = backbone.family.pixel_inputs(backbone.processor, batch[IMAGES])
    extra = backbone.family.extra_inputs(batch[INPUT_IDS], backbone.image_token_id)
    inner = backbone.vlm.model
    own, _ = inner.get_rope_index(batch[INPUT_IDS], image_grid_thw=pixels["image_grid_thw"],
                                  attention_mask=batch[ATTENTION], mm_token_type_ids=extra["mm_token_type_ids"])
    cache: dict[Any, torch.Tensor] = {}
    cached = backbone.family.position_inputs(inner, batch[INPUT_IDS], batch[ATTENTION], {**pixels, **extra}, cache)
    assert torch.equal(cached["position_ids"], own)
    assert len(cache) == 4  # one entry per distinct prompt row
    with torch.no_grad():
        inputs = dict(input_ids=batch[INPUT_IDS], attention_mask=batch[ATTENTION], output_hidden_states=True,
                      use_cache=False, **pixels, **extra)
        reference = inner(**inputs).last_hidden_state
        _, hidden = backbone(batch[INPUT_IDS], batch[ATTENTION], batch[IMAGES])
        _, again = backbone(batch[INPUT_IDS], batch[ATTENTION], batch[IMAGES])  # from the backbone's cache
    assert torch.allclose(hidden, reference, atol=1e-6) and torch.equal(hidden, again)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_builds_and_takes_a_step(family: str, strategy: str) -> None:
    model = make_vla(spec(strategy, family), seed=0, instructions=WORDS)
    batch = fixed_batch(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss, metrics = objective(cfg(strategy))(model, batch)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert ("token_ce" in metrics) == (strategy in ("la_direct", "la_cond", "la_tok"))
    assert ("align" in metrics) == (strategy == "la_align")
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("backbone.") for n in changed) and any(n.startswith("head.") for n in changed)
    assert model(batch)[ACTIONS].shape == (4, CHUNK, ACTION_DIM)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_overfits_a_fixed_batch(strategy: str) -> None:
    torch.manual_seed(0)
    model = make_vla(spec(strategy), seed=0, instructions=WORDS)
    batch = fixed_batch(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loss_fn = objective(cfg(strategy))
    first = None
    for step in range(200):  # each strategy needs 30-60 steps here
        loss, _ = loss_fn(model, batch)
        first = float(loss.detach()) if first is None else first
        if float(loss.detach()) < first / 10:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    final = float(loss.detach())
    assert final < first / 10, f"{strategy}: loss {first:.3f} -> {final:.3f} after {step} steps"


def test_baseline_head_reads_placeholders_not_a_fixed_slice() -> None:
    """Moving the prompt (more left padding) must not change the baseline's prediction."""
    model = make_vla(spec("baseline"), seed=0, instructions=WORDS).eval()
    batch = fixed_batch(model, size=1)
    padded = dict(batch)
    pad = model.backbone.tokenizer.pad_token_id
    padded[INPUT_IDS] = torch.cat([torch.full((1, 5), pad), batch[INPUT_IDS]], 1)
    padded[ATTENTION] = torch.cat([torch.zeros(1, 5, dtype=torch.long), batch[ATTENTION]], 1)
    with torch.no_grad():
        assert torch.allclose(model(batch)[ACTIONS], model(padded)[ACTIONS], atol=1e-4)


def test_lora_freezes_the_backbone_and_trains_adapters() -> None:
    model = make_vla(spec("la_tok", lora=4), seed=0, instructions=WORDS)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    backbone_trainable = [n for n in trainable if n.startswith("backbone.")]
    assert backbone_trainable and all("lora_" in n for n in backbone_trainable)
    loss, _ = objective(cfg("la_tok"))(model, fixed_batch(model))
    loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_frozen_vision_encoder_gets_no_gradient_its_projection_does_and_the_policy_round_trips(
        family: str, tmp_path: Path) -> None:
    model = make_vla(spec("baseline", family), seed=0, instructions=WORDS)
    count = model.backbone.freeze_vision_encoder()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    encoder = {"qwen3_vl": ".model.visual.", "smolvlm": ".model.vision_model."}[family]
    projection = {"qwen3_vl": ".model.visual.merger.", "smolvlm": ".model.connector."}[family]
    assert frozen and all(encoder in n and projection not in n for n in frozen)
    assert count == sum(p.numel() for n, p in model.named_parameters() if n in frozen)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = fixed_batch(model)
    loss, _ = objective(cfg("baseline"))(model, batch)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(grads[n] is None for n in frozen)
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if projection in n)
    optimizer.step()
    model.eval()
    out = tmp_path / "policy"
    out.mkdir()
    save_vla(model, spec("baseline", family), out, {"policy": "vla"})
    loaded, _ = load_vla(out)  # rebuilt unfrozen: every weight, the frozen ones included, comes from the policy
    with torch.no_grad():
        assert torch.equal(model(batch)[ACTIONS], loaded(batch)[ACTIONS])


def test_latent_vocabularies_join_the_tokenizer() -> None:
    direct, tok, base = (make_vla(spec(s), seed=0, instructions=WORDS) for s in ("la_direct", "la_tok", "baseline"))
    assert len(direct.backbone.tokenizer) == len(base.backbone.tokenizer) + LAM_META["codebook_size"]
    assert len(tok.backbone.tokenizer) == len(base.backbone.tokenizer) + VQ_META["vocab_size"]
    assert direct.backbone.token_id("<ACT_7>") == int(direct.latent_ids[7])
    rows = direct.backbone.vlm.get_input_embeddings().num_embeddings
    assert rows == len(direct.backbone.tokenizer)  # the embedding is sized to match
    targets = direct.token_targets(torch.tensor([[0, 7, -100]]))
    assert targets.tolist() == [[direct.backbone.token_id("<ACT_0>"), direct.backbone.token_id("<ACT_7>"), -100]]


def test_placeholders_per_step_sizes_the_baseline_and_la_align_prompts() -> None:
    """P x K placeholders for the strategies without latent tokens; la_align still reads the last K."""
    for per_step in (1, 2, 5):
        assert get_strategy("baseline").layout(CHUNK, {}, per_step).placeholders == per_step * CHUNK
    align = get_strategy("la_align").layout(CHUNK, LAM_META, 3)
    assert (align.placeholders, align.align_slots, align.head_from) == (3 * CHUNK, 2 * CHUNK, 2 * CHUNK)
    with pytest.raises(ValueError, match="use 2 or more"):
        get_strategy("la_align").layout(CHUNK, LAM_META, 1)
    # the latent strategies' layouts follow their latents, not P
    assert get_strategy("la_direct").layout(CHUNK, LAM_META, 5) == get_strategy("la_direct").layout(CHUNK, LAM_META, 1)
    model = make_vla(dataclasses.replace(spec("baseline"), placeholders_per_step=3), seed=0, instructions=WORDS)
    assert model.placeholder_positions(fixed_batch(model)[INPUT_IDS]).shape == (4, 3 * CHUNK)


def test_unknown_strategy_names_the_closest() -> None:
    with pytest.raises(KeyError, match="Did you mean 'la_tok'"):
        get_strategy("la_toks")


def test_augmentation_is_seeded_and_the_eval_view_is_a_centre_crop() -> None:
    params = AugmentParams(crop_scale=0.75, brightness=0.2, contrast=0.2, saturation=0.2)
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 2, 16, 16, 3), dtype=np.uint8))
    first = augment(images, params, torch.Generator().manual_seed(1))
    assert first.shape == (2, 2, 3, 16, 16) and 0 <= float(first.min()) and float(first.max()) <= 1
    assert torch.equal(first, augment(images, params, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, augment(images, params, torch.Generator().manual_seed(2)))
    plain = eval_view(images, AugmentParams(1.0, 0.0, 0.0, 0.0))
    assert torch.equal(plain, to_float(images))
    assert eval_view(images, params).shape == plain.shape


@pytest.mark.parametrize("family", FAMILIES)
def test_pretrained_preset_loads_a_checkpoint_applies_lora_and_round_trips(family: str, tmp_path: Path) -> None:
    """The pretrained path offline: a local checkpoint, LoRA on the frozen model, new latent tokens, save/load."""
    source = make_vla(spec("baseline", family), seed=0, instructions=WORDS).backbone
    checkpoint = tmp_path / "checkpoint"
    source.vlm.save_pretrained(checkpoint)
    source.tokenizer.save_pretrained(checkpoint)
    source.processor.image_processor.save_pretrained(checkpoint)
    pretrained = dataclasses.replace(spec("la_tok", family, lora=4).backbone, preset="pretrained",
                                     pretrained=str(checkpoint))
    la_tok = dataclasses.replace(spec("la_tok", family), backbone=pretrained)
    model = make_vla(la_tok, seed=0, instructions=WORDS)
    # Qwen-style tables would have room to spare; these tiny ones must grow by the 16 <LA_i> tokens.
    assert model.backbone.grown
    assert model.backbone.vlm.get_input_embeddings().num_embeddings == len(model.backbone.tokenizer)
    loaded_weights = dict(model.backbone.vlm.named_parameters())
    compared = 0
    for name, weight in source.vlm.named_parameters():  # real weights, not a fresh init (LoRA wraps Linear layers)
        wrapped = name.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        target = loaded_weights.get(wrapped, loaded_weights.get(name))
        if "embed_tokens" not in name and "lm_head" not in name:
            assert target is not None and torch.equal(target, weight) and not target.requires_grad, name
            compared += 1
    assert compared > 10
    batch = fixed_batch(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss, _ = objective(cfg("la_tok"))(model, batch)
    loss.backward()
    optimizer.step()
    model.eval()
    out = tmp_path / "policy"
    out.mkdir()
    save_vla(model, la_tok, out, {"policy": "vla"})
    loaded, _ = load_vla(out)
    with torch.no_grad():
        assert torch.allclose(model(batch)[ACTIONS], loaded(batch)[ACTIONS], atol=1e-6)


def test_gradient_accumulation_equals_one_full_batch() -> None:
    """train()'s micro-batching: two halves of a batch give the gradient of the whole (no masked steps here)."""
    from accelerate import Accelerator

    from common.train import _forward_backward

    grads = []
    for parts in (1, 2):
        model = make_vla(spec("la_tok"), seed=0, instructions=WORDS)
        _forward_backward(Accelerator(cpu=True), model, objective(cfg("la_tok")), fixed_batch(model), parts, 0)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-4)
