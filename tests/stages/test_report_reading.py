"""The report reads at a glance (headline, legend, power, reference rows) and survives one seed or no variance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.cli import StageError
from stages.report.__main__ import main
from tests.stages.test_report import OFF, STRATEGIES, params, write_inputs


def fail_everything(root: Path) -> None:
    """Rewrite every evaluation so that no episode succeeds (totals kept consistent)."""
    for episodes in (root / "results/evaluate").glob("*/episodes.jsonl"):
        lines = [json.loads(line) | {"success": False} for line in episodes.read_text().splitlines()]
        episodes.write_text("".join(json.dumps(e) + "\n" for e in lines))
        totals = root / f"metrics/evaluate/{episodes.parent.name}.json"
        metrics = json.loads(totals.read_text())
        metrics["success"] |= {"successes": 0, "rate": 0.0}
        totals.write_text(json.dumps(metrics))


def test_reference_policies_are_rows_and_the_gap_is_in_the_headline(tmp_path: Path) -> None:
    write_inputs(tmp_path, references=("expert", "reference"))
    metrics = main(params(references=["expert", "reference"]), OFF, tmp_path)

    assert set(metrics["success"]) == set(STRATEGIES)  # the strategies only, as the smoke test reads them
    gaps = {r: metrics["references"][r]["baseline_minus_reference"] for r in ("expert", "reference")}
    assert gaps["reference"]["all"]["mean"] == pytest.approx(0.2, abs=0.05)  # designed: 50% - 30%
    assert gaps["reference"]["all"]["ci95"][0] < 0.2 < gaps["reference"]["all"]["ci95"][1]
    assert gaps["expert"]["seen"]["mean"] == pytest.approx(-0.5, abs=0.05)
    assert metrics["references"]["expert"]["success"] == {"mean": 1.0, "ci95": [1.0, 1.0]}

    report = (tmp_path / "reports/study.md").read_text()
    baseline_line = next(line for line in report.splitlines() if line.startswith("**Baseline:**"))
    assert "on seen layouts" in baseline_line and "baseline minus reference +" in baseline_line
    rows = [line.split("|")[1].strip() for line in report.split("## Success by suite")[1].splitlines()[4:11]]
    assert rows == ["expert", "reference", *STRATEGIES]
    # The expert never fails: a zero-width interval, explained rather than shown as certainty.
    assert "| expert | 100.0 (not estimable, see note) |" in report
    assert "every episode has the same outcome: interval not estimable" in report
    assert "[100.0, 100.0]" not in report


def test_the_report_opens_with_a_headline_a_legend_and_a_power_section(tmp_path: Path) -> None:
    write_inputs(tmp_path)
    main(params(), OFF, tmp_path)
    report = (tmp_path / "reports/study.md").read_text()
    lines = [line for line in report.splitlines()[1:] if line][:3]
    assert [line.split(":**")[0] for line in lines] == ["**Result", "**Baseline", "**Power"]
    assert "the best strategy, la_tok" in lines[0] and "significant after Holm: la_align, la_tok" in lines[0]
    assert "MDE" in lines[2] and "seeds" in lines[2] and "0.05/4 = 0.0125" in lines[2]
    for strategy in STRATEGIES:
        assert f"- **{strategy}**: " in report
    assert "la_align + la_direct + la_cond vs baseline, on long_horizon tasks" in report
    assert "la_direct + la_cond + la_tok vs la_align, on all episodes" in report
    power = report.split("## Power")[1]
    assert "| 3 seeds, 1x episodes | 3 seeds, 2x episodes | 5 seeds, 1x episodes |" in power
    assert "Holm's strictest level alpha/m" in power
    assert "lr" not in report.split("## Fine-tuning")[1].splitlines()[2].split("|")  # no learning-rate column
    assert "train_lr" not in report


def test_training_curves_need_the_action_l1_column(tmp_path: Path) -> None:
    write_inputs(tmp_path)
    (tmp_path / "plots/finetune/la_cond-1.csv").write_text("step,loss\n0,1.0\n")
    with pytest.raises(StageError, match=r"la_cond-1.csv: expected a header with `step` and `l1`.*"
                                         r"dvc repro finetune@la_cond-1"):
        main(params(), OFF, tmp_path)


def test_one_seed_reports_without_tests_or_mde(tmp_path: Path) -> None:
    write_inputs(tmp_path, seeds=[0])
    metrics = main(params(seeds=[0]), OFF, tmp_path)
    assert {c["verdict"] for c in metrics["claims"].values()} == {"inconclusive"}
    la_tok = metrics["versus_baseline"]["la_tok"]
    assert la_tok["p"] is None and la_tok["ci95_t"] == [None, None] and "1 seed" in la_tok["note"]
    power = metrics["power"]["claims"]["action_latents_precision"]
    assert power["mde"] is None and "not estimable" in power["note"] and power["variance"]["between"] is None
    report = (tmp_path / "reports/study.md").read_text()
    assert "MDE, is not estimable" in report and "no seed-level test" in report


def test_no_variance_at_all_is_said_not_estimable(tmp_path: Path) -> None:
    write_inputs(tmp_path)
    fail_everything(tmp_path)
    metrics = main(params(), OFF, tmp_path)
    assert all(v["p"] is None and v["diff"] == 0 for v in metrics["versus_baseline"].values())
    assert {c["verdict"] for c in metrics["claims"].values()} == {"inconclusive"}
    assert all(p["mde"] is None and "no variance observed" in p["note"]
               for p in metrics["power"]["claims"].values())
    report = (tmp_path / "reports/study.md").read_text()
    assert "all 3 seeds give the same difference" in report
    assert "all 3 seeds and their episodes agree: interval not estimable from 3 seeds" in report
