"""The report stage on synthetic evaluations with known answers; missing or inconsistent inputs are clear errors.

`write_inputs` is shared with the other test_report_*.py files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from common.cli import StageError
from common.tracking import TrackingParams
from stages.report import Params
from stages.report.__main__ import main
from stages.report.analysis import CLAIMS, compare, make_cells
from stages.report.inputs import read_evaluation

STRATEGIES = ["baseline", "la_align", "la_direct", "la_cond", "la_tok"]
SEEDS = [0, 1, 2]
TASKS = {"button-press-topdown-v3": ["short"], "drawer-open-v3": ["short"], "door-open-v3": ["long_horizon"],
         "shelf-place-v3": ["long_horizon", "precision"], "assembly-v3": ["long_horizon", "precision"],
         "peg-insert-side-v3": ["long_horizon", "precision"]}
SUITES = ["seen", "unseen_layouts", "visual_shift"]
EPISODES = 10
OFF = TrackingParams(enabled=False, uri="", experiment="unit")


def truth(strategy: str, categories: list[str]) -> float:
    """The designed success probabilities: la_tok +40 points on precision tasks; la_align -30 everywhere;
    la_direct and la_cond exactly the baseline's 50%; the reference policies: expert 100%, reference 30%."""
    if strategy == "la_tok" and "precision" in categories:
        return 0.9
    return {"la_align": 0.2, "expert": 1.0, "reference": 0.3}.get(strategy, 0.5)


def params(**changes: object) -> Params:
    """Report params for the synthetic study (no reference policies unless asked)."""
    values = dict(strategies=STRATEGIES, seeds=SEEDS, references=[], bootstrap=1000, alpha=0.05, min_effect=0.05,
                  target_mde=0.10, seed=0)
    values.update(changes)
    return Params(**values)  # type: ignore[arg-type]


def write_evaluation(root: Path, name: str, truth_of: str, rng: np.random.Generator) -> None:
    """evaluate's outputs for one policy: episodes.jsonl and its totals."""
    episodes = []
    for task, cats in TASKS.items():
        for suite in SUITES:
            # The designed rate, give or take one episode (noise that averages out: no effect of its own); a
            # policy that always succeeds (the expert) always does.
            rate = truth(truth_of, cats)
            successes = round(rate * EPISODES) + (int(rng.integers(-1, 2)) if 0 < rate < 1 else 0)
            episodes += [{"policy": f"models/finetune/{name}", "task": task, "suite": suite,
                          "categories": cats, "episode": e, "layout_index": e, "seed": 1000 + e,
                          "success": e < successes, "steps": 100, "steps_to_success": None,
                          "failure": None, "error": None} for e in range(EPISODES)]
    folder = root / "results/evaluate" / name
    folder.mkdir(parents=True)
    (folder / "episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    successes = sum(e["success"] for e in episodes)
    metrics = {"success": {"n": len(episodes), "successes": successes, "rate": successes / len(episodes),
                           "ci95": [0.0, 1.0]}, "per_task": {}, "per_suite": {}, "per_category": {}}
    (root / "metrics/evaluate").mkdir(parents=True, exist_ok=True)
    (root / f"metrics/evaluate/{name}.json").write_text(json.dumps(metrics))


def write_inputs(root: Path, strategies: list[str] = STRATEGIES, seeds: list[int] = SEEDS,
                 references: tuple[str, ...] = ()) -> None:
    """Evaluations (episodes + totals), finetune metrics and curves, LAM and tokenizer metrics, per contract."""
    rng = np.random.default_rng(0)
    for strategy in strategies:
        for seed in seeds:
            name = f"{strategy}-{seed}"
            write_evaluation(root, name, strategy, rng)
            (root / "metrics/finetune").mkdir(parents=True, exist_ok=True)
            (root / f"metrics/finetune/{name}.json").write_text(json.dumps({"val_l1": 0.1 + seed, "steps": 20,
                                                                            "train_lr": 0.0}))
            (root / "plots/finetune").mkdir(parents=True, exist_ok=True)
            with (root / f"plots/finetune/{name}.csv").open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["step", "grad_norm", "l1", "loss", "lr"])
                writer.writerows([[step, 1.0, 0.5 / (1 + step + seed), 2.0 / (1 + step), 0.01]
                                  for step in range(0, 20, 5)])
    for reference in references:
        write_evaluation(root, reference, reference, rng)
    (root / "metrics/lam.json").write_text(json.dumps({"code_usage": 1.0, "controllability_gap_ci95": [0.1, 0.2]}))
    (root / "metrics/action_vq.json").write_text(json.dumps({"perplexity": 200.0, "per_dimension": {"x": {"mse": 1}}}))


def test_report_recovers_the_designed_effects(tmp_path: Path) -> None:
    write_inputs(tmp_path)
    metrics = main(params(), OFF, tmp_path)

    versus = metrics["versus_baseline"]
    assert versus["la_align"]["p_holm"] < 0.05 and versus["la_align"]["ci95"][0] < -0.3 < versus["la_align"]["ci95"][1]
    assert versus["la_tok"]["p_holm"] < 0.05 and versus["la_tok"]["diff"] > 0.1  # +40 on half of the tasks
    assert versus["la_direct"]["p_holm"] > 0.05 and versus["la_cond"]["p_holm"] > 0.05  # no true effect
    assert all(versus[k]["p_holm"] >= versus[k]["p"] for k in versus)  # Holm never lowers a p-value
    # The seed is the unit: one difference per seed, a t-test on them, a t interval beside the bootstrap one.
    la_align = versus["la_align"]
    assert len(la_align["per_seed"]) == 3 and np.mean(la_align["per_seed"]) == pytest.approx(la_align["diff"])
    assert la_align["ci95_t"][0] < la_align["diff"] < la_align["ci95_t"][1]
    assert la_align["test"] == "paired t-test over seeds"

    claims = {k: v["verdict"] for k, v in metrics["claims"].items()}
    assert claims == {"action_latents_precision": "supported",  # la_tok +40 points on precision tasks
                      "discrete_tokens_beat_alignment": "supported",  # la_align is 30 points worse than the rest
                      "image_latents_long_horizon": "contradicted",  # the image group averages -10 points
                      "image_latents_scene_generalization": "contradicted"}
    precision = metrics["claims"]["action_latents_precision"]
    assert precision["ci95"][0] < 0.4 < precision["ci95"][1]
    assert metrics["success"]["la_align"]["ci95"][0] < 0.2 < metrics["success"]["la_align"]["ci95"][1]

    power = metrics["power"]["claims"]["action_latents_precision"]
    assert power["family_size"] == 4 and power["alpha_level"] == pytest.approx(0.05 / 4)
    assert 0 < power["mde"] < 1 and power["seeds_for_target_mde"]["episodes_x1"] >= 2

    report = (tmp_path / "reports/study.md").read_text()
    assert "**supported**" in report and "**contradicted**" in report and "mixed heterogeneous data" in report
    assert "| code_usage | 1 |" in report and "| per_dimension.x.mse | 1 |" in report
    assert "## Power" in report
    for figure in ("success_by_suite.png", "success_by_category.png", "training_curves.png"):
        data = (tmp_path / "reports" / figure).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert json.loads((tmp_path / "metrics/report.json").read_text()) == json.loads(json.dumps(metrics))
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [
        "study.md", "success_by_category.png", "success_by_suite.png", "training_curves.png"]


def test_a_claim_whose_strategies_were_not_run_is_not_tested(tmp_path: Path) -> None:
    write_inputs(tmp_path, ["baseline", "la_tok"])
    cells = make_cells({(s, seed): read_evaluation(tmp_path, f"{s}-{seed}") for s in ("baseline", "la_tok")
                        for seed in SEEDS})
    results = {c.key: c for c in compare(cells, list(CLAIMS), {"baseline", "la_tok"},
                                         params(strategies=["baseline", "la_tok"]), judge=True)}
    assert results["action_latents_precision"].verdict == "supported"
    assert results["image_latents_long_horizon"].verdict is None
    assert "not tested" in results["image_latents_long_horizon"].note
    precision = results["action_latents_precision"]
    assert precision.result is not None and precision.p_holm == pytest.approx(precision.result.p_value)


def test_missing_and_inconsistent_inputs_are_clear_errors(tmp_path: Path) -> None:
    write_inputs(tmp_path)
    (tmp_path / "metrics/lam.json").unlink()
    (tmp_path / "results/evaluate/la_tok-2/episodes.jsonl").unlink()
    with pytest.raises(StageError, match=r"2 report input\(s\) missing") as missing:
        main(params(), OFF, tmp_path)
    assert "la_tok-2/episodes.jsonl" in str(missing.value) and "metrics/lam.json" in str(missing.value)
    assert not (tmp_path / "reports").exists() and not (tmp_path / "metrics/report.json").exists()

    write_inputs(tmp_path / "b")
    episodes = tmp_path / "b/results/evaluate/la_cond-1/episodes.jsonl"
    lines = episodes.read_text().splitlines()
    episodes.write_text("\n".join(lines[:-1]) + "\n")  # one episode lost: the totals no longer match
    with pytest.raises(StageError, match=r"la_cond-1.json: success .* disagrees"):
        main(params(), OFF, tmp_path / "b")
    bad = json.loads(lines[0]) | {"success": "yes"}
    episodes.write_text(json.dumps(bad) + "\n" + "\n".join(lines[1:]) + "\n")
    with pytest.raises(StageError, match=r"episodes.jsonl:1: field 'success' = 'yes' is not a bool"):
        main(params(), OFF, tmp_path / "b")


def test_missing_reference_evaluations_name_the_file_and_the_stage(tmp_path: Path) -> None:
    write_inputs(tmp_path, references=("reference",))
    with pytest.raises(StageError) as missing:
        main(params(references=["expert", "reference"]), OFF, tmp_path)
    message = str(missing.value)
    assert "results/evaluate/expert/episodes.jsonl: run `dvc repro evaluate_expert`" in message
    assert "metrics/evaluate/expert.json: run `dvc repro evaluate_expert`" in message
    assert "evaluate_reference" not in message and "report.references" in message
    assert not (tmp_path / "reports").exists()


def test_params_are_range_checked() -> None:
    problems = {p.field for p in params(alpha=1.5, bootstrap=5, target_mde=0.0,
                                        references=["expert", "expert"]).problems()}
    assert problems == {"alpha", "bootstrap", "target_mde", "references"}
    assert {p.field for p in params(references=["la_tok"]).problems()} == {"references"}  # a strategy, not a reference


def test_the_repository_params_load_and_name_stages_that_exist() -> None:
    import yaml

    from common.config import load_section
    from stages.report import reference_stage

    project = Path(__file__).parents[2]
    loaded = load_section(project / "params.yaml", "report", Params)
    assert loaded.target_mde == pytest.approx(0.10) and loaded.references
    assert loaded.seeds == [0, 1, 2] and loaded.strategies[0] == "baseline"  # from study.items
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    assert all(reference_stage(name) in stages for name in loaded.references)  # the stage the errors name
