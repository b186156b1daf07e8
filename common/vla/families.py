"""The two backbone families behind one small interface: Qwen3-VL (the study's) and SmolVLM (Idefics3).

A family knows its special tokens, how its prompt marks an image, how to build a tiny random config, its image
processor, and how to turn a batch of float images into its model's pixel inputs. The pixel path runs in torch
(so augmentation and inference stay batched); tests check it equals the family's own processor output.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F

from common.config import Problem

if TYPE_CHECKING:  # transformers is imported lazily: it costs seconds, and params modules import this one
    from transformers import PretrainedConfig, PreTrainedTokenizerBase


@dataclasses.dataclass(frozen=True)
class TinyParams:
    """A tiny random backbone (the tiny preset): sizes of its language and vision transformers."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    patch_size: int  # vision patch side in px; 2x2 patches merge into one LLM token
    vocab_size: int  # size of the BPE learnt offline from the instructions
    temporal_patch_size: int  # frames per patch: 1 for still images (Qwen3-VL's video default 2 repeats the frame)
    stem: tuple[int, ...]  # widths of strided 3x3 convs before the patch embedding (); their count is log2(patch)

    def problems(self) -> list[Problem]:
        """Range and divisibility checks (head dims must be whole, even numbers for rotary embeddings)."""
        out = [Problem(f.name, getattr(self, f.name), "must be at least 1", "use a positive integer")
               for f in dataclasses.fields(self) if f.name != "stem" and getattr(self, f.name) < 1]
        if self.stem and min(self.stem) < 1:
            out.append(Problem("stem", list(self.stem), "widths must be at least 1", "e.g. [16, 32, 64]"))
        if out:
            return out
        if self.stem and 2 ** len(self.stem) != self.patch_size:
            out.append(Problem("stem", list(self.stem), f"{len(self.stem)} stride-2 convs reduce by "
                               f"{2 ** len(self.stem)}, not by patch_size {self.patch_size}",
                               f"give log2(patch_size) widths, e.g. {[16 * 2**i for i in range(3)]} for patch 8"))
        if self.hidden % self.heads or (self.hidden // self.heads) % 4:
            out.append(Problem("hidden", self.hidden, f"must split into {self.heads} heads of a size divisible by 4",
                               "e.g. hidden 64 with 4 heads"))
        if self.heads % self.kv_heads:
            out.append(Problem("kv_heads", self.kv_heads, f"must divide heads ({self.heads})", "e.g. 2"))
        if self.vision_hidden % self.vision_heads or (self.vision_hidden // self.vision_heads) % 2:
            out.append(Problem("vision_hidden", self.vision_hidden,
                               f"must split into {self.vision_heads} heads of an even size", "e.g. 64 with 4 heads"))
        return out


class Family(Protocol):
    """What the VLA needs to know of a backbone family."""

    name: str
    image_token: str
    special_tokens: tuple[str, ...]

    def image_text(self, cameras: int) -> str:
        """The prompt text that stands for `cameras` images (the processor expands it to image tokens)."""
        ...

    def tiny_config(self, tiny: TinyParams, tokenizer: PreTrainedTokenizerBase, input_size: int) -> PretrainedConfig:
        """A random-weight config sized by `tiny`, its token ids taken from `tokenizer`."""
        ...

    def image_processor(self, source: str | Path | None, input_size: int, tiny: TinyParams | None) -> Any:
        """The family's image processor (from `source`, else sized by `tiny`), showing the model `input_size` px."""
        ...

    def adapt(self, vlm: Any) -> None:
        """Change a built model in place where this project computes differently, as its config records."""
        ...

    def vision_encoder(self, vlm: Any) -> list[torch.nn.Module]:
        """The modules that turn pixels into vision features, up to (not including) the projection into the LLM."""
        ...

    def load_image_processor(self, directory: Path) -> Any:
        """The image processor a finetune output saved (exactly as trained: size included)."""
        ...

    def processor(self, image_processor: Any, tokenizer: PreTrainedTokenizerBase, config: PretrainedConfig) -> Any:
        """The multimodal processor assembled from its parts."""
        ...

    def pixel_inputs(self, processor: Any, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Model pixel inputs from float images (B, cameras, 3, H, W) in [0, 1]."""
        ...

    def extra_inputs(self, input_ids: torch.Tensor, image_token_id: int) -> dict[str, torch.Tensor]:
        """Inputs the forward pass needs besides ids, mask and pixels."""
        ...

    def position_inputs(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        inputs: dict[str, torch.Tensor], cache: dict[Any, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Position ids to hand the forward pass, each prompt's computed once into `cache` ({}: the model's own)."""
        ...


STEM_KEY = "conv_stem"  # vision-config entry: the conv stem's widths (saved with the config, so a reload rebuilds it)


def _normalize(processor: Any, images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (only if needed) and normalize (B*cams, 3, H, W) images with the image processor's mean and std."""
    if images.shape[-1] != size or images.shape[-2] != size:
        images = F.interpolate(images, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    ip = processor.image_processor
    mean = torch.tensor(ip.image_mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(ip.image_std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies over (time, height, width) in Qwen3-VL's proportions (24/20/20)."""
    half = head_dim // 2
    side = (5 * half) // 16
    return [half - 2 * side, side, side]


class Qwen3VL:
    """Qwen3-VL: `<|vision_start|><|image_pad|>...<|vision_end|>` per image, merged 2x2 patches, M-RoPE."""

    name = "qwen3_vl"
    image_token = "<|image_pad|>"
    special_tokens = ("<|endoftext|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")

    def image_text(self, cameras: int) -> str:
        return "<|vision_start|><|image_pad|><|vision_end|>" * cameras

    def tiny_config(self, tiny: TinyParams, tokenizer: PreTrainedTokenizerBase, input_size: int) -> PretrainedConfig:
        from transformers import Qwen3VLConfig

        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in self.special_tokens}
        head_dim = tiny.hidden // tiny.heads
        side = input_size // tiny.patch_size
        return Qwen3VLConfig(
            text_config=dict(
                vocab_size=len(tokenizer), hidden_size=tiny.hidden, intermediate_size=tiny.intermediate,
                num_hidden_layers=tiny.layers, num_attention_heads=tiny.heads, num_key_value_heads=tiny.kv_heads,
                head_dim=head_dim, pad_token_id=ids["<|endoftext|>"],
                # mrope_section must sum to head_dim/2; a wrong value is silently accepted.
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": _mrope_section(head_dim), "mrope_interleaved": True}),
            vision_config=dict(
                depth=tiny.vision_layers, hidden_size=tiny.vision_hidden, intermediate_size=2 * tiny.vision_hidden,
                num_heads=tiny.vision_heads, patch_size=tiny.patch_size, spatial_merge_size=2,
                temporal_patch_size=tiny.temporal_patch_size,
                out_hidden_size=tiny.hidden, num_position_embeddings=side * side,  # must be a perfect square
                deepstack_visual_indexes=[0], **{STEM_KEY: list(tiny.stem)}),
            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        )

    def image_processor(self, source: str | Path | None, input_size: int, tiny: TinyParams | None) -> Any:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        pixels = {"shortest_edge": input_size * input_size, "longest_edge": input_size * input_size}
        if source is None:
            processor = Qwen2VLImageProcessorPil(patch_size=tiny.patch_size, merge_size=2,
                                                 temporal_patch_size=tiny.temporal_patch_size, size=pixels)
        else:  # the hub's default minimum-pixels setting would blow small images up: pin the size
            processor = Qwen2VLImageProcessorPil.from_pretrained(source, size=pixels)
        factor = processor.patch_size * processor.merge_size
        if input_size % factor:
            raise ValueError(f"backbone.input_size = {input_size} px is not a multiple of {factor} (patch "
                             f"{processor.patch_size} x merge {processor.merge_size}); the processor would resize it. "
                             f"Set backbone.input_size to a multiple of {factor}")
        return processor

    def adapt(self, vlm: Any) -> None:
        from common.vla.vision import adapt_qwen3_vl_vision

        adapt_qwen3_vl_vision(vlm, tuple(getattr(vlm.config.vision_config, STEM_KEY, ())))

    def vision_encoder(self, vlm: Any) -> list[torch.nn.Module]:
        visual = vlm.model.visual  # its merger and deepstack mergers project into the LLM
        return [visual.patch_embed, visual.pos_embed, visual.blocks]

    def load_image_processor(self, directory: Path) -> Any:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        return Qwen2VLImageProcessorPil.from_pretrained(directory)

    def processor(self, image_processor: Any, tokenizer: PreTrainedTokenizerBase, config: PretrainedConfig) -> Any:
        return image_only_qwen3_vl_processor()(image_processor=image_processor, tokenizer=tokenizer)

    def pixel_inputs(self, processor: Any, images: torch.Tensor) -> dict[str, torch.Tensor]:
        ip = processor.image_processor
        size = int(round(ip.size["longest_edge"] ** 0.5))
        batch, cams = images.shape[:2]
        x = _normalize(processor, images.flatten(0, 1), size)  # (N, C, S, S)
        n, c, p, m, tp = x.shape[0], x.shape[1], ip.patch_size, ip.merge_size, ip.temporal_patch_size
        grid = size // p
        # The processor's patch order: (t, h/m, w/m, m, m) patches, each flattened as (C, tp, p, p).
        x = x.unsqueeze(1).expand(n, tp, c, size, size).reshape(n, tp, c, grid // m, m, p, grid // m, m, p)
        x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(n * grid * grid, c * tp * p * p)
        thw = torch.tensor([[1, grid, grid]], device=images.device).repeat(batch * cams, 1)
        return {"pixel_values": x, "image_grid_thw": thw}

    def extra_inputs(self, input_ids: torch.Tensor, image_token_id: int) -> dict[str, torch.Tensor]:
        return {"mm_token_type_ids": (input_ids == image_token_id).long()}

    def position_inputs(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        inputs: dict[str, torch.Tensor], cache: dict[Any, torch.Tensor]) -> dict[str, torch.Tensor]:
        """M-RoPE position ids (3, B, S). The model would recompute them at every forward pass in a Python loop over
        the batch (~15% of a tiny training step); they depend only on a row's ids, mask and image grids, of which a
        study has a handful (one per task and padded length), so each is computed once by the model's own
        `get_rope_index` and reused."""
        grids = inputs["image_grid_thw"]
        per_row = grids.shape[0] // input_ids.shape[0]
        if len(cache) > _POSITION_CACHE_SIZE:
            cache.clear()
        rows = []
        for i in range(input_ids.shape[0]):
            grid = grids[i * per_row:(i + 1) * per_row]
            key = (tuple(input_ids[i].tolist()), tuple(attention_mask[i].tolist()), tuple(grid.flatten().tolist()))
            if key not in cache:
                cache[key] = model.get_rope_index(input_ids[i:i + 1], image_grid_thw=grid,
                                                  attention_mask=attention_mask[i:i + 1],
                                                  mm_token_type_ids=inputs["mm_token_type_ids"][i:i + 1])[0]
            rows.append(cache[key])
        return {"position_ids": torch.cat(rows, dim=1)}


_POSITION_CACHE_SIZE = 4096  # distinct prompt rows kept (a study has tens)


@functools.cache
def image_only_qwen3_vl_processor() -> type:
    """Qwen3VLProcessor without its video part (the stock one needs torchvision to build its video processor)."""
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    class ImageOnlyQwen3VLProcessor(Qwen3VLProcessor):
        def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None,
                     **kwargs: Any):
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    return ImageOnlyQwen3VLProcessor


class SmolVLM:
    """SmolVLM / Idefics3: `<image>` per image, expanded to image_seq_len tokens; pixel-shuffle connector."""

    name = "smolvlm"
    image_token = "<image>"
    special_tokens = ("<|endoftext|>", "<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>")

    def image_text(self, cameras: int) -> str:
        return "<image>" * cameras

    def tiny_config(self, tiny: TinyParams, tokenizer: PreTrainedTokenizerBase, input_size: int) -> PretrainedConfig:
        from transformers import Idefics3Config

        if tiny.stem:  # a conv stem is implemented for Qwen3-VL's patch layout only
            raise ValueError(f"backbone.tiny.stem = {list(tiny.stem)} is implemented for qwen3_vl only; "
                             "set it to [] for smolvlm")
        return Idefics3Config(
            vision_config=dict(hidden_size=tiny.vision_hidden, intermediate_size=2 * tiny.vision_hidden,
                               num_hidden_layers=tiny.vision_layers, num_attention_heads=tiny.vision_heads,
                               image_size=input_size, patch_size=tiny.patch_size),
            text_config=dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=tiny.hidden,
                             intermediate_size=tiny.intermediate, num_hidden_layers=tiny.layers,
                             num_attention_heads=tiny.heads, num_key_value_heads=tiny.kv_heads,
                             pad_token_id=tokenizer.pad_token_id),
            scale_factor=2, image_token_id=tokenizer.convert_tokens_to_ids(self.image_token),
        )

    def image_processor(self, source: str | Path | None, input_size: int, tiny: TinyParams | None) -> Any:
        from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

        size = {"longest_edge": input_size}
        settings = dict(do_image_splitting=False, size=size, max_image_size=size)
        if source is None:
            return Idefics3ImageProcessorPil(**settings)
        return Idefics3ImageProcessorPil.from_pretrained(source, **settings)

    def adapt(self, vlm: Any) -> None:
        pass  # SigLIP's attention is batched already

    def vision_encoder(self, vlm: Any) -> list[torch.nn.Module]:
        return [vlm.model.vision_model]  # SigLIP; the pixel-shuffle connector projects into the LLM

    def load_image_processor(self, directory: Path) -> Any:
        from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

        return Idefics3ImageProcessorPil.from_pretrained(directory)

    def processor(self, image_processor: Any, tokenizer: PreTrainedTokenizerBase, config: PretrainedConfig) -> Any:
        from transformers import Idefics3Processor

        vision = config.vision_config
        seq_len = (vision.image_size // vision.patch_size) ** 2 // config.scale_factor**2
        return Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=seq_len)

    def pixel_inputs(self, processor: Any, images: torch.Tensor) -> dict[str, torch.Tensor]:
        size = processor.image_processor.size["longest_edge"]
        batch, cams = images.shape[:2]
        x = _normalize(processor, images.flatten(0, 1), size).view(batch, cams, 3, size, size)
        mask = torch.ones(batch, cams, size, size, dtype=torch.long, device=images.device)
        return {"pixel_values": x, "pixel_attention_mask": mask}

    def extra_inputs(self, input_ids: torch.Tensor, image_token_id: int) -> dict[str, torch.Tensor]:
        return {}

    def position_inputs(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        inputs: dict[str, torch.Tensor], cache: dict[Any, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {}  # 1-D positions: the model's own are cheap


FAMILIES: dict[str, Family] = {f.name: f for f in (Qwen3VL(), SmolVLM())}
