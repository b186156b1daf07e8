"""The vision-language backbone: `AutoModelForImageTextToText` plus its processor, tiny or pretrained.

Both presets take the same path: a tokenizer (learnt offline for tiny, the checkpoint's for pretrained) gains
the placeholder and latent tokens, the model is built (random weights from a config, or real weights), the
embedding grows only if the new tokens do not fit, and LoRA (peft) is applied to the frozen model when asked.
Forward passes return the hidden states of every layer; logits are computed only where a token loss needs them
(a 151936-way head over every position would dominate the step).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from common.config import Problem
from common.vla.families import FAMILIES, STEM_KEY, TinyParams

log = logging.getLogger(__name__)

TOKENIZER_DIR, PROCESSOR_DIR, CONFIG_DIR = "tokenizer", "processor", "backbone_config"


@dataclasses.dataclass(frozen=True)
class LoraParams:
    """Low-rank adapters on the frozen backbone (peft)."""

    rank: int  # 0: no adapters, every backbone weight trains (the tiny preset's random weights need it)
    alpha: float
    dropout: float
    targets: str  # "all-linear" (vision tower too) or a regex over module names, e.g. the language model only

    def problems(self) -> list[Problem]:
        """Range checks."""
        out = []
        if self.rank < 0:
            out.append(Problem("rank", self.rank, "must not be negative", "use 0 (full training) or e.g. 64"))
        if not 0 <= self.dropout < 1:
            out.append(Problem("dropout", self.dropout, "must be in [0, 1)", "e.g. 0.0"))
        if self.rank > 0 and not self.targets:
            out.append(Problem("targets", self.targets, "must name modules when rank > 0", "e.g. all-linear"))
        return out


@dataclasses.dataclass(frozen=True)
class BackboneParams:
    """Which backbone, at what size, from which weights."""

    family: Literal["qwen3_vl", "smolvlm"]
    preset: Literal["tiny", "pretrained"]
    pretrained: str  # hub id or local directory (preset: pretrained); ignored by tiny
    input_size: int  # image side in px the vision tower sees; 0: the dataset's image size
    tiny: TinyParams
    lora: LoraParams

    def problems(self) -> list[Problem]:
        """Range checks."""
        out = []
        if self.preset == "pretrained" and not self.pretrained:
            out.append(Problem("pretrained", self.pretrained, "is empty but preset is 'pretrained'",
                               "name a hub id (e.g. Qwen/Qwen3-VL-2B-Instruct) or a local directory"))
        if self.input_size < 0:
            out.append(Problem("input_size", self.input_size, "must not be negative", "0 (dataset size) or e.g. 224"))
        return out


class Backbone(nn.Module):
    """The VLM with its processor; `forward` returns all hidden states (num_layers + 1 tensors)."""

    def __init__(self, family: str, vlm: nn.Module, processor: Any, grown: bool = False,
                 base_from_checkpoint: bool = False):
        super().__init__()
        self.grown = grown  # the embedding was resized for the added tokens (its new rows are not in the checkpoint)
        # LoRA on pretrained weights: a reload takes the frozen base weights from the checkpoint, not the policy
        self.base_from_checkpoint = base_from_checkpoint
        self.family = FAMILIES[family]
        self.vlm = vlm
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_token_id = int(self.tokenizer.convert_tokens_to_ids(self.family.image_token))
        text = vlm.config.get_text_config()
        self.num_layers, self.hidden_size = int(text.num_hidden_layers), int(text.hidden_size)
        self._prompt_cache: dict[str, list[int]] = {}
        self._position_cache: dict[Any, torch.Tensor] = {}

    def freeze_vision_encoder(self) -> int:
        """Keep the vision encoder's weights (LoRA adapters in it included) as they are; its projection into the LLM
        still trains. Returns the number of parameters frozen."""
        frozen = [p for module in self.family.vision_encoder(self.vlm) for p in module.parameters()]
        for parameter in frozen:
            parameter.requires_grad_(False)
        return sum(p.numel() for p in frozen)

    def token_id(self, token: str) -> int:
        """The id of one added token; an unknown token is an error, never the unknown-token id."""
        ids = self.tokenizer.convert_tokens_to_ids([token])
        if ids[0] is None or self.tokenizer.convert_ids_to_tokens(ids)[0] != token:
            raise KeyError(f"token {token!r} is not in the tokenizer")
        return int(ids[0])

    def prompt_ids(self, text: str, cameras: int, image_size: int) -> list[int]:
        """Token ids of the prompt `text` after `cameras` images, through the processor (image tokens expanded).

        The ids depend on the image size, never on pixel values, so they are computed once per text.
        """
        key = f"{cameras}|{image_size}|{text}"
        if key not in self._prompt_cache:
            blank = [torch.zeros(image_size, image_size, 3, dtype=torch.uint8).numpy()] * cameras
            encoded = self.processor(text=[self.family.image_text(cameras) + text], images=[blank],
                                     return_tensors="pt")
            self._prompt_cache[key] = encoded["input_ids"][0].tolist()
        return self._prompt_cache[key]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                images: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Hidden states of every layer (num_layers + 1) and the final normed state, each (B, S, D).

        `input_ids` (B, S), `images` float (B, cameras, 3, H, W) in [0, 1].
        """
        pixels = self.family.pixel_inputs(self.processor, images)
        extra = self.family.extra_inputs(input_ids, self.image_token_id)
        positions = self.family.position_inputs(self.vlm.model, input_ids, attention_mask, {**pixels, **extra},
                                                self._position_cache)
        out = self.vlm.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                             use_cache=False, **pixels, **extra, **positions)
        return tuple(out.hidden_states), out.last_hidden_state

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM-head logits for selected hidden states only: (M, D) -> (M, vocab)."""
        return self.vlm.lm_head(hidden)


def build_tokenizer(params: BackboneParams, template: str, instructions: tuple[str, ...]) -> Any:
    """The tokenizer: the checkpoint's (pretrained) or a small BPE learnt offline from `instructions` (tiny)."""
    from common.vla.tokenizer import instruction_corpus, train_bpe

    family = FAMILIES[params.family]
    if params.preset == "tiny":
        return train_bpe(instruction_corpus(template, instructions), family.special_tokens, params.tiny.vocab_size)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(params.pretrained)


def build_backbone(params: BackboneParams, template: str, added_tokens: tuple[str, ...], image_size: int,
                   seed: int, instructions: tuple[str, ...]) -> Backbone:
    """Build the backbone with `added_tokens` in its vocabulary (embedding sized to match) and LoRA if asked."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    family = FAMILIES[params.family]
    input_size = params.input_size or image_size
    tokenizer = build_tokenizer(params, template, instructions)
    tokenizer.add_tokens(list(added_tokens), special_tokens=True)
    torch.manual_seed(seed)
    if params.preset == "tiny":
        config = family.tiny_config(params.tiny, tokenizer, input_size)
        vlm = AutoModelForImageTextToText.from_config(config)
        family.adapt(vlm)
        image_processor = family.image_processor(None, input_size, params.tiny)
    else:
        config = AutoConfig.from_pretrained(params.pretrained)
        vlm = load_pretrained_vlm(params.pretrained, family)
        image_processor = family.image_processor(params.pretrained, input_size, None)
    return _assemble(params, family, vlm, tokenizer, image_processor, config)


def _assemble(params: BackboneParams, family: Any, vlm: nn.Module, tokenizer: Any, image_processor: Any,
              config: Any) -> Backbone:
    """Room for the added tokens, LoRA if asked, and the processor: the same for a new and a reloaded backbone."""
    # Qwen's 151936-row table has room for new tokens; SmolVLM's equals its vocabulary and must grow. Never
    # shrink: resizing Qwen to len(tokenizer) would cut rows the checkpoint owns.
    grown = len(tokenizer) > vlm.get_input_embeddings().num_embeddings
    if grown:
        vlm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if params.lora.rank > 0:
        apply_lora(vlm, params.lora)
    return Backbone(params.family, vlm, family.processor(image_processor, tokenizer, config), grown,
                    base_from_checkpoint=params.preset == "pretrained" and params.lora.rank > 0)


def load_pretrained_vlm(source: str, family: Any) -> nn.Module:
    """Real weights from a hub id or local directory, adapted as its config records (batched vision attention; a
    conv stem, which transformers' own loader would not know, is built before this project's weights load)."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(source)
    if not getattr(getattr(config, "vision_config", None), STEM_KEY, None):
        vlm, info = AutoModelForImageTextToText.from_pretrained(source, dtype=torch.float32, output_loading_info=True)
        missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
        reshaped = sorted(str(m) for m in info.get("mismatched_keys", []))
        if missing or unexpected or reshaped:
            raise ValueError(f"{source}: weights do not match the model (missing {missing[:3]}, unexpected "
                             f"{unexpected[:3]}, reshaped {reshaped[:3]})")
        family.adapt(vlm)
        return vlm
    from safetensors.torch import load_file

    vlm = AutoModelForImageTextToText.from_config(config)
    family.adapt(vlm)
    weights = Path(source) / "model.safetensors"
    if not weights.is_file():
        raise ValueError(f"{source}: a checkpoint with a conv stem must be a local directory with model.safetensors "
                         "(as `save_pretrained` writes it)")
    missing, unexpected = vlm.load_state_dict(load_file(str(weights)), strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ValueError(f"{weights}: weights do not match the model (missing {sorted(set(missing) - tied)[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]})")
    vlm.tie_weights()
    return vlm


def apply_lora(vlm: nn.Module, lora: LoraParams) -> None:
    """Freeze the backbone and inject LoRA adapters in place (the module tree keeps its names)."""
    from peft import LoraConfig, inject_adapter_in_model

    for parameter in vlm.parameters():
        parameter.requires_grad_(False)
    # A string other than "all-linear" is a regex peft matches against full module names.
    config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.targets)
    inject_adapter_in_model(config, vlm)
    trained = sum(p.numel() for p in vlm.parameters() if p.requires_grad)
    if trained == 0:
        raise ValueError(f"LoRA targets {lora.targets!r} matched no module; name modules of the backbone")
    log.info("LoRA rank %d on %s: %d trainable backbone parameters", lora.rank, lora.targets, trained)


def save_backbone_files(backbone: Backbone, directory: Path) -> None:
    """Save what rebuilding the backbone needs besides weights: its config, tokenizer and image processor."""
    backbone.vlm.config.save_pretrained(directory / CONFIG_DIR)
    backbone.tokenizer.save_pretrained(directory / TOKENIZER_DIR)
    backbone.processor.image_processor.save_pretrained(directory / PROCESSOR_DIR)


def load_backbone(directory: Path, params: BackboneParams) -> Backbone:
    """Rebuild a saved backbone (weights loaded by the caller): config, tokenizer and processor from `directory`."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoTokenizer

    family = FAMILIES[params.family]
    config = AutoConfig.from_pretrained(directory / CONFIG_DIR)
    tokenizer = AutoTokenizer.from_pretrained(directory / TOKENIZER_DIR)
    image_processor = family.load_image_processor(directory / PROCESSOR_DIR)
    if params.preset == "tiny" or params.lora.rank == 0:  # every backbone weight is in the saved policy (build.py)
        vlm = AutoModelForImageTextToText.from_config(config)
        family.adapt(vlm)
    else:  # the frozen weights come from the checkpoint, the adapters from the saved policy
        vlm = load_pretrained_vlm(params.pretrained, family)
    return _assemble(params, family, vlm, tokenizer, image_processor, config)
