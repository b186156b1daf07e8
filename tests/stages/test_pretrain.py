"""The pretraining stages: the study's tasks stay out; the start trains, saves, resumes; finetune loads it strictly."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from common.collection import CollectParams
from common.cli import StageError
from common.config import ParamsError, from_dict
from common.demos import DemoReader, validate_file
from common.policy import load_policy
from common.simulators.metaworld.tasks import MT50
from common.tracking import TrackingParams
from common.vla.build import WEIGHTS, VlaSpec, make_vla
from common.vla.pretrained import BACKBONE_WEIGHTS, HEAD_WEIGHTS, PRETRAIN_META, fresh_parameters
from common.vla.strategies import PLACEHOLDER, STRATEGIES
from stages import collect_pretrain, pretrain
from stages.collect_pretrain.__main__ import main as collect_main
from stages.finetune import DEMOS as STUDY_DEMOS
from stages.finetune import Item, outputs
from stages.pretrain.__main__ import main as pretrain_main
from tests.common.test_vla import WORDS
from tests.stages.test_finetune import CODEBOOK, CODES, TINY, VOCAB, cfg, tiny, write_latents
from tests.synthetic import write_moving_square_dataset

REPO = Path(__file__).resolve().parents[2]
OFF = TrackingParams(enabled=False, uri="", experiment="test")
STUDY = {"simulator": "metaworld", "tasks": ["drawer-open-v3", "door-open-v3"], "demos_per_task": 2,
         "val_demos_per_task": 1,
         "heldout_layouts_per_task": 1, "max_attempts_per_task": 6, "max_episode_steps": 200,
         "cameras": ["corner", "gripperPOV"], "image_size": 32, "seed": 0, "workers": 1}
LATENT_META = {"none": {}, "lam": {"codebook_size": CODEBOOK, "codes_per_transition": CODES},
               "action_vq": {"vocab_size": VOCAB}}
ARCH = from_dict(pretrain.Architecture, {f.name: TINY[f.name] for f in dataclasses.fields(pretrain.Architecture)},
                 prefix="finetune")
TRAIN = {"steps": 4, "batch_size": 4, "lr": 0.001, "weight_decay": 0.0, "warmup_steps": 1, "schedule": "constant",
         "grad_clip": 1.0, "precision": "auto", "log_every": 2, "checkpoint_every": 2, "seed": 0}


def collect_params(**changes: Any) -> collect_pretrain.Params:
    raw = {"exclude": [], "max_tasks": 0, "demos_per_task": 1, "val_demos_per_task": 0, "max_attempts_per_task": 3,
           "seed": 1000, "workers": 1, **changes}
    return from_dict(collect_pretrain.Params, raw, prefix="collect_pretrain")


def pretrain_params(**train: Any) -> pretrain.Params:
    return from_dict(pretrain.Params, {"val_fraction": 0.1, "threads": 1, "train": {**TRAIN, **train},
                                       "eval": {"max_samples": 8, "batch_size": 4}}, prefix="pretrain")


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_the_pretraining_tasks_are_every_mt50_task_outside_the_study() -> None:
    study = from_dict(CollectParams, STUDY, prefix="collect")
    chosen, problems = collect_pretrain.collection(collect_params(exclude=["reach-v3"]), study)
    assert not problems and chosen.seed == 1000 and chosen.heldout_layouts_per_task == 0
    assert set(chosen.tasks) == set(MT50) - {"drawer-open-v3", "door-open-v3", "reach-v3"}
    assert (chosen.cameras, chosen.image_size, chosen.max_episode_steps) == (STUDY["cameras"], 32, 200)
    assert collect_pretrain.collection(collect_params(max_tasks=3), study)[0].tasks == list(MT50)[:3]
    repo = CollectParams(**{**STUDY, "tasks": yaml.safe_load((REPO / "params.yaml").read_text())["collect"]["tasks"]})
    assert not set(collect_pretrain.collection(collect_params(), repo)[0].tasks) & set(repo.tasks)


def test_a_shared_seed_or_an_empty_task_list_is_a_parameter_error(tmp_path: Path) -> None:
    study = from_dict(CollectParams, STUDY, prefix="collect")
    _, problems = collect_pretrain.collection(collect_params(seed=0), study)
    assert [p.field for p in problems] == ["collect_pretrain.seed"]
    _, problems = collect_pretrain.collection(collect_params(exclude=list(MT50)), study)
    assert [p.field for p in problems] == ["collect_pretrain.exclude"]
    with pytest.raises(ParamsError, match="collect_pretrain.seed = 0: equals collect.seed"):
        collect_main(collect_params(seed=0), study, OFF, tmp_path)
    _, problems = collect_pretrain.collection(collect_params(exclude=["no-such-task-v3"]), study)
    assert [str(p) for p in problems] == [
        "collect_pretrain.exclude[0] = 'no-such-task-v3': not a metaworld task. Fix: use a task of "
        "common/simulators/metaworld"]


def test_collect_pretrain_writes_only_tasks_outside_the_study(tmp_path: Path) -> None:
    study = from_dict(CollectParams, STUDY, prefix="collect")
    params = collect_params(exclude=["assembly-v3", "basketball-v3", "bin-picking-v3", "box-close-v3"], max_tasks=2)
    keep = ["button-press-topdown-v3", "button-press-topdown-wall-v3"]  # the first two in MT50's table left
    metrics = collect_main(params, study, OFF, tmp_path)
    assert files_under(tmp_path) - {"mlflow.db"} == {collect_pretrain.DEMOS.as_posix(),
                                                      collect_pretrain.METRICS.as_posix()}
    meta = validate_file(tmp_path / collect_pretrain.DEMOS)
    assert set(meta.tasks) == set(keep) and meta.image_size == (32, 32) and meta.collection_seed == 1000
    with DemoReader(tmp_path / collect_pretrain.DEMOS) as reader:
        written = {e.task for e in reader}
    assert written <= set(keep) and not written & set(STUDY["tasks"])
    assert metrics["episodes"] == sum(m["successes"] for m in metrics["tasks"].values())
    assert set(metrics["short_tasks"]) == {t for t, m in metrics["tasks"].items() if m["successes"] < 1}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny pretrain output on synthetic demos (its own root), 4 steps."""
    root = tmp_path_factory.mktemp("pretrain")
    write_moving_square_dataset(root / pretrain.DEMOS, episodes=4, length=10, size=16, val_episodes=2, seed=3)
    pretrain_main(pretrain_params(), ARCH, LATENT_META, OFF, root)
    return root


def test_pretrain_writes_exactly_its_outputs_with_the_whole_vocabulary(pretrained: Path) -> None:
    written = {p for p in files_under(pretrained) if not p.startswith(("data/", "checkpoints/"))}
    model = {p for p in written if p.startswith(f"{pretrain.MODEL.as_posix()}/")}
    assert written - model == {pretrain.METRICS.as_posix(), pretrain.PLOTS.as_posix()}
    assert {Path(p).name for p in model} >= {"config.json", BACKBONE_WEIGHTS, HEAD_WEIGHTS, PRETRAIN_META,
                                             "preprocessor_config.json", "tokenizer.json"}
    meta = json.loads((pretrained / pretrain.MODEL / PRETRAIN_META).read_text())
    assert meta["tasks"] == ["square"] and meta["objective"].startswith("l1") and meta["train_steps"] == 4
    expected = [PLACEHOLDER, *(f"<ACT_{i}>" for i in range(CODEBOOK)), *(f"<LA_{i}>" for i in range(VOCAB))]
    assert meta["vocabulary"] == expected
    assert 0 < json.loads((pretrained / pretrain.METRICS).read_text())["val_l1"] < 2


def test_pretrain_resumes_to_the_same_bytes(pretrained: Path, tmp_path: Path) -> None:
    (tmp_path / pretrain.DEMOS).parent.mkdir(parents=True)
    (tmp_path / pretrain.DEMOS).symlink_to(pretrained / pretrain.DEMOS)
    assert pretrain_main(pretrain_params(steps=2), ARCH, LATENT_META, OFF, tmp_path)["resumed_from"] == 0  # "killed"
    assert pretrain_main(pretrain_params(), ARCH, LATENT_META, OFF, tmp_path)["resumed_from"] == 2
    for name in (BACKBONE_WEIGHTS, HEAD_WEIGHTS):
        assert (tmp_path / pretrain.MODEL / name).read_bytes() == (pretrained / pretrain.MODEL / name).read_bytes()


def from_start(strategy: str, start: Path, latent_meta: dict[str, Any]) -> VlaSpec:
    """Finetune's spec of `strategy` with the pretrained start as its backbone."""
    backbone = dataclasses.replace(ARCH.backbone, preset="pretrained", pretrained=str(start))
    return VlaSpec(strategy, ARCH.chunk, 4, 4, ARCH.cameras, 16, latent_meta, 16 if strategy == "la_align" else 0,
                   ARCH.placeholders_per_step, backbone, ARCH.head)


SIDE_META = {"baseline": {}, "la_align": {"codebook_size": CODEBOOK, "codes_per_transition": CODES, "code_dim": 6},
             "la_direct": {"codebook_size": CODEBOOK, "codes_per_transition": CODES, "code_dim": 6},
             "la_cond": {"codebook_size": CODEBOOK, "codes_per_transition": CODES, "code_dim": 6},
             "la_tok": {"tokens_per_chunk": 4, "vocab_size": VOCAB}}


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_loads_every_pretrained_weight_and_only_its_own_modules_stay_fresh(
        pretrained: Path, strategy: str) -> None:
    start = pretrained / pretrain.MODEL
    model = make_vla(from_start(strategy, start, SIDE_META[strategy]), seed=5, instructions=WORDS)
    backbone, head = load_file(str(start / BACKBONE_WEIGHTS)), load_file(str(start / HEAD_WEIGHTS))
    state = model.state_dict()
    assert {n for n in state if n.startswith("head.")} == {f"head.{n}" for n in head}
    assert all(torch.equal(state[f"head.{n}"], t) for n, t in head.items())
    vlm = model.backbone.vlm.state_dict()
    assert set(backbone) <= set(vlm) and all(torch.equal(vlm[n], t) for n, t in backbone.items())
    assert not model.backbone.grown and all(p.requires_grad for p in model.parameters())  # LoRA 0: all trains
    fresh = fresh_parameters(model)
    if strategy == "la_align":  # the projector into the LAM's code space is la_align's own
        assert fresh and all(n.startswith("align.") for n in fresh)
    else:
        assert fresh == []


def test_token_ids_are_the_same_for_every_strategy(pretrained: Path) -> None:
    start = pretrained / pretrain.MODEL
    tokens = json.loads((start / PRETRAIN_META).read_text())["vocabulary"]
    ids = {s: [make_vla(from_start(s, start, SIDE_META[s]), 0, instructions=WORDS).backbone.token_id(t)
               for t in tokens]
           for s in sorted(STRATEGIES)}
    assert len({tuple(v) for v in ids.values()}) == 1 and len(set(ids["baseline"])) == len(tokens)


def test_a_latent_vocabulary_the_start_lacks_is_a_clear_error(pretrained: Path) -> None:
    start = pretrained / pretrain.MODEL
    bigger = {**SIDE_META["la_tok"], "vocab_size": VOCAB + 4}
    with pytest.raises(ValueError, match="lacks 4 tokens.*dvc repro pretrain"):
        make_vla(from_start("la_tok", start, bigger), 0, instructions=WORDS)


def test_another_chunk_than_the_start_was_trained_for_names_the_head_weights(pretrained: Path) -> None:
    spec = from_start("baseline", pretrained / pretrain.MODEL, {})
    with pytest.raises(ValueError, match="action head does not match.*queries"):
        make_vla(dataclasses.replace(spec, chunk=ARCH.chunk + 2), 0, instructions=WORDS)


def test_finetune_from_the_start_records_it(pretrained: Path, tmp_path: Path) -> None:
    from stages.finetune.__main__ import main as finetune_main

    write_moving_square_dataset(tmp_path / STUDY_DEMOS, episodes=4, length=10, size=16, val_episodes=2)
    write_latents(tmp_path)
    start = tmp_path / "start"
    shutil.copytree(pretrained / pretrain.MODEL, start)
    backbone = {**TINY["backbone"], "preset": "pretrained", "pretrained": str(start)}
    item = Item("la_align", 0)
    finetune_main(tiny(backbone=backbone), OFF, tmp_path, item, cfg("la_align"))
    meta = json.loads((tmp_path / outputs(item)[0] / "meta.json").read_text())
    assert meta["pretrained"]["source"] == str(start)
    assert len(meta["pretrained"]["sha256"].split(",")) == 2
    assert meta["pretrained"]["fresh"] and all(n.startswith("align.") for n in meta["pretrained"]["fresh"])
    shutil.rmtree(start)  # the trained policy holds every weight: evaluation never reads the start
    assert load_policy(tmp_path / outputs(item)[0]).chunk == TINY["chunk"]


def test_a_frozen_vision_encoder_keeps_the_start_while_its_projection_trains_and_the_policy_holds_both(
        pretrained: Path, tmp_path: Path) -> None:
    from stages.finetune.__main__ import main as finetune_main

    write_moving_square_dataset(tmp_path / STUDY_DEMOS, episodes=4, length=10, size=16, val_episodes=2)
    start = tmp_path / "start"
    shutil.copytree(pretrained / pretrain.MODEL, start)
    backbone = {**TINY["backbone"], "preset": "pretrained", "pretrained": str(start)}
    item = Item("baseline", 0)
    finetune_main(tiny(backbone=backbone, vision_encoder="frozen"), OFF, tmp_path, item, cfg("baseline"))
    before = load_file(str(start / BACKBONE_WEIGHTS))
    after = {n.removeprefix("backbone.vlm."): t for n, t in
             load_file(str(tmp_path / outputs(item)[0] / WEIGHTS)).items() if n.startswith("backbone.vlm.")}
    encoder = [n for n in before if n.startswith(("model.visual.patch_embed.", "model.visual.pos_embed.",
                                                   "model.visual.blocks."))]
    projection = [n for n in before if n.startswith(("model.visual.merger.", "model.visual.deepstack_merger"))]
    language = [n for n in before if n.startswith("model.language_model.layers.")]
    assert encoder and projection and language and set(before) <= set(after)  # the policy saves every weight
    assert all(torch.equal(after[n], before[n]) for n in encoder)
    assert not any(torch.equal(after[n], before[n]) for n in projection if n.endswith("weight"))
    assert not any(torch.equal(after[n], before[n]) for n in language if n.endswith("proj.weight"))
    shutil.rmtree(start)  # evaluation needs only the policy's folder
    assert load_policy(tmp_path / outputs(item)[0]).chunk == TINY["chunk"]


def test_finetune_reads_the_pretrain_stage_start_under_its_root_not_the_working_directory(
        pretrained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stages.finetune import START
    from stages.finetune.__main__ import main as finetune_main

    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    write_moving_square_dataset(root / STUDY_DEMOS, episodes=4, length=10, size=16, val_episodes=2)
    shutil.copytree(pretrained / pretrain.MODEL, root / START)
    (elsewhere / START).mkdir(parents=True)  # a start-shaped folder in the working directory must not be read
    monkeypatch.chdir(elsewhere)
    backbone = {**TINY["backbone"], "preset": "pretrained", "pretrained": str(START)}
    item = Item("baseline", 0)
    finetune_main(tiny(backbone=backbone), OFF, root, item, cfg("baseline"))
    meta = json.loads((root / outputs(item)[0] / "meta.json").read_text())
    assert meta["pretrained"]["source"] == str(root / START)
    shutil.rmtree(root / START)
    shutil.rmtree(root / outputs(item)[0])
    with pytest.raises(StageError, match="dvc repro pretrain"):
        finetune_main(tiny(backbone=backbone), OFF, root, item, cfg("baseline"))
