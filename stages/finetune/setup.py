"""The finetune model set-up the stage and benchmarks share: demos and latents read, spec, model and batches built."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from common.cli import StageError
from common.demos import training_demos
from common.demos.schema import Stats
from common.provenance import file_sha256
from common.vla.build import VlaSpec, make_vla
from common.vla.data import Batches, Episodes
from common.vla.tokenizer import task_instructions
from common.vla.latents import read_latents
from common.vla.model import VLA
from common.vla.pretrained import fresh_parameters, pretrained_start
from common.vla.prompt import prompt_text
from common.vla.strategies import get_strategy
from stages.finetune import DEMOS, START, Item, Params

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Setup:
    """Everything training needs, built as the stage builds it."""

    params: Params  # with backbone.pretrained resolved under the root
    spec: VlaSpec
    model: VLA
    data_meta: Any  # the demos' metadata (common.demos)
    action_stats: Stats
    proprio_stats: Stats
    train_set: Episodes
    val_set: Episodes
    train_batches: Batches
    val_batches: Batches
    hashes: list[str]  # the demos', then the latent file's (if the strategy reads one)


def start_under_root(params: Params, root: Path) -> Params:
    """A relative `backbone.pretrained` that is the pretrain stage's output, or a directory under `root`, is read
    from `root` (where the DAG's outputs are), not from the working directory; a hub id stays as given."""
    source = Path(params.backbone.pretrained)
    if params.backbone.preset != "pretrained" or source.is_absolute() \
            or (source != START and not (root / source).is_dir()):
        return params
    return dataclasses.replace(params, backbone=dataclasses.replace(params.backbone, pretrained=str(root / source)))


def set_up(params: Params, root: Path, item: Item, cfg: Any) -> Setup:
    """Read the demos (and the strategy's latents), build the item's VLA and its train / val batches."""
    strategy = get_strategy(item.strategy)
    if params.threads:
        torch.set_num_threads(params.threads)
    demos = root / DEMOS
    data_meta, action_stats, proprio_stats = training_demos(demos, params.cameras, "finetune.cameras",
                                                            "pick from those", val_fraction=params.val_fraction)
    train_set, val_set = (Episodes.load(demos, split, params.cameras, action_stats, proprio_stats,
                                        params.normalization, val_fraction=params.val_fraction)
                          for split in ("train", "val"))
    hashes, latent_meta = [file_sha256(demos)], {}
    if (latent_file := item.latent_file()) is not None:
        path = root / latent_file
        latent_meta, arrays = read_latents(path, strategy.latent, hashes[0], {**train_set.lengths(),
                                           **val_set.lengths()}, params.chunk, data_meta.action_space.dim)
        train_set.attach(arrays)
        val_set.attach(arrays)
        hashes.append(file_sha256(path))

    params = start_under_root(params, root)
    if params.backbone.preset == "pretrained" and Path(params.backbone.pretrained) == root / START \
            and pretrained_start(params.backbone) is None:
        raise StageError(f"finetune.backbone.pretrained = {params.backbone.pretrained!r}: the pretrain stage's "
                         "start is not there. Next step: `dvc repro pretrain` (or the whole study: `dvc repro`)")
    image_size = data_meta.image_size[0]
    spec = VlaSpec(item.strategy, params.chunk, data_meta.action_space.dim, data_meta.proprio_dim, params.cameras,
                   image_size, latent_meta, strategy.module_width(cfg), params.placeholders_per_step,
                   params.backbone, params.head)
    try:
        model = make_vla(spec, item.seed, instructions=task_instructions(data_meta.env, train_set.instructions
                                                                  + val_set.instructions))
    except ValueError as exc:  # a backbone that cannot take these settings
        raise StageError(f"finetune: {exc}") from exc
    start = pretrained_start(params.backbone)
    if start is not None:
        log.info("%s: backbone and action head from %s; freshly initialised: %s", item.name, start,
                 fresh_parameters(model) or "nothing")
    if params.vision_encoder == "frozen":
        log.info("%s: vision encoder frozen (%d parameters)", item.name, model.backbone.freeze_vision_encoder())
    layout, backbone = model.layout, model.backbone
    prompt = lambda instruction: backbone.prompt_ids(  # noqa: E731
        prompt_text(instruction, params.chunk, layout.placeholders), len(params.cameras), image_size)
    pad = backbone.tokenizer.pad_token_id
    train_batches, val_batches = (Batches(s, prompt, pad, params.chunk, strategy, layout, params.augment)
                                  for s in (train_set, val_set))
    log.info("%s: %d training samples, %d held-out; %d placeholders; %d trainable parameters", item.name,
             len(train_set), len(val_set), layout.placeholders,
             sum(p.numel() for p in model.parameters() if p.requires_grad))
    return Setup(params, spec, model, data_meta, action_stats, proprio_stats, train_set, val_set, train_batches,
                 val_batches, hashes)
