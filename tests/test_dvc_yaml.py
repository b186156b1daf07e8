"""dvc.yaml is the one DAG: its stages must agree with the code (stage names, code deps, params sections)."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from common.config import shared_keys

REPO = Path(__file__).resolve().parents[1]


def test_each_stage_matches_its_package() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, stage in stages.items():
        if "foreach" in stage:  # matrix stages: see test_each_matrix_stage_matches_its_package
            continue
        if name.startswith("evaluate_"):  # one policy through the evaluate stage: its code plus the policy's loader
            package = importlib.import_module("stages.evaluate")
            assert stage["cmd"].startswith("python -m stages.evaluate --policy ")
            assert stage["cmd"].endswith(f"--name {name.removeprefix('evaluate_')}")
            code_deps = {d for d in stage["deps"] if d.startswith(("common", "stages"))}
            assert set(package.CODE) <= code_deps, f"{name}: dvc.yaml deps lack part of stages.evaluate.CODE"
            assert stage["params"] == ["evaluate"]
            continue
        package = importlib.import_module(f"stages.{name}")
        assert package.STAGE == name
        assert stage["cmd"] == f"python -m stages.{name}"
        assert stage["params"][0] == name and name in params
        shared = set(shared_keys(package.Params).values()) - {"study"}  # the report's strategies: study.items
        assert shared <= set(stage["params"]), f"{name}: dvc.yaml params lack {shared - set(stage['params'])}"
        code_deps = [d for d in stage["deps"] if d.startswith(("common", "stages"))]
        assert sorted(code_deps) == sorted(package.CODE), f"{name}: dvc.yaml deps differ from {name}.CODE"
        declared = [next(iter(m)) if isinstance(m, dict) else m for m in stage.get("metrics", [])]
        assert package.METRICS.as_posix() in declared
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage["outs"]]
        assert sorted(outs) == sorted(p.as_posix() for p in package.OUTS)
        upstream = [d for d in stage["deps"] if d.startswith("data/")]
        assert sorted(upstream) == sorted(p.as_posix() for p in getattr(package, "INPUTS", ()))


def test_each_matrix_stage_matches_its_package() -> None:
    """finetune and evaluate: one item per study.items entry, each depending on exactly the code and data it reads."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    package = importlib.import_module("stages.finetune")
    do = stages["finetune"]["do"]
    assert stages["finetune"]["foreach"] == stages["evaluate"]["foreach"] == "${study.items}"
    assert do["cmd"] == "python -m stages.finetune --strategy ${item.strategy} --seed ${item.seed}"
    assert do["params"] == ["finetune", *shared_keys(package.Params).values(), "strategy_cfg.${item.strategy}"]
    assert sorted(d for d in do["deps"] if d.startswith(("common", "stages"))) == sorted(package.CODE)
    data_deps = [d for d in do["deps"] if not d.startswith(("common", "stages"))]
    assert data_deps == [*(p.as_posix() for p in package.INPUTS), "${item.reads}", package.START.as_posix()]
    model, metrics, plots = (p.as_posix().replace(package.Item("baseline", 0).name, "${key}")
                             for p in package.outputs(package.Item("baseline", 0)))
    assert [next(iter(o)) if isinstance(o, dict) else o for o in do["outs"]] == [model]
    assert [next(iter(m)) for m in do["metrics"]] == [metrics]
    assert [next(iter(p)) for p in do["plots"]] == [plots]

    evaluate = importlib.import_module("stages.evaluate")
    do = stages["evaluate"]["do"]
    assert do["cmd"] == "python -m stages.evaluate --policy models/finetune/${key} --name ${key}"
    assert do["params"] == ["evaluate"]
    assert sorted(d for d in do["deps"] if d.startswith(("common", "stages"))) == sorted(evaluate.CODE)
    assert [d for d in do["deps"] if not d.startswith(("common", "stages"))] == [
        *(p.as_posix() for p in evaluate.INPUTS), "models/finetune/${key}"]
    assert [next(iter(o)) if isinstance(o, dict) else o for o in do["outs"]] == [f"{evaluate.RESULTS}/${{key}}"]
    assert [next(iter(m)) for m in do["metrics"]] == [f"{evaluate.METRICS_DIR}/${{key}}.json"]
    assert stages["report"]["params"] == ["report", "study.items"]


def test_pretrain_lists_every_setting_it_reads_from_other_sections() -> None:
    """collect_pretrain and pretrain read parts of `collect`, `finetune`, `lam` and `action_vq`: DVC must rerun them
    when those change (finetune.backbone.preset, pretrained and lora are not read: pretrain always starts tiny)."""
    import dataclasses

    from stages.pretrain import Architecture, Params

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    pretrain = set(stages["pretrain"]["params"])
    backbone = {"finetune.backbone.family", "finetune.backbone.input_size", "finetune.backbone.tiny"}
    own = {f"finetune.{f.name}" for f in dataclasses.fields(Architecture)
           if f.name != "backbone" and f.name not in shared_keys(Architecture)}
    assert own | set(shared_keys(Architecture).values()) | set(shared_keys(Params).values()) | backbone | {
        "pretrain", "lam.model.codebook_size", "lam.model.codes_per_transition", "action_vq.model.quantizer",
        "action_vq.model.codebook_size", "action_vq.model.fsq_levels"} == pretrain
    assert set(stages["collect_pretrain"]["params"]) == {"collect_pretrain", "collect.simulator", "collect.tasks",
                                                         "collect.seed",
                                                         "collect.cameras", "collect.image_size",
                                                         "collect.max_episode_steps"}
