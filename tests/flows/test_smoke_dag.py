"""The whole DAG end to end at the `smoke` sizes (configs/smoke.yaml), through the Prefect flow, in a temporary git +
DVC copy of the project: every stage completes, `dvc status` is clean, the audit passes for a reported number, and
a modified model is caught."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from common.audit import audit
from common.config import apply_overrides
from flows.study import FlowOptions, dvc_status, run_study
from tests.flows.toy import PROJECT, dvc, project_repo

SMOKE = PROJECT / "configs/smoke.yaml"


def test_smoke_overrides_name_existing_keys_and_keep_every_strategy() -> None:
    """configs/smoke.yaml overrides keys of params.yaml only (a typo is an error) and trains every strategy once."""
    params = apply_overrides(yaml.safe_load((PROJECT / "params.yaml").read_text()), yaml.safe_load(SMOKE.read_text()),
                             str(SMOKE))
    assert params.keys() == yaml.safe_load((PROJECT / "params.yaml").read_text()).keys()
    items = params["study"]["items"].values()
    assert {i["strategy"] for i in items} == set(params["strategy_cfg"]) and {i["seed"] for i in items} == {0}


@pytest.mark.slow
def test_smoke_dag_through_the_flow_then_audit(tmp_path: Path) -> None:
    root = project_repo(tmp_path / "repo", SMOKE)
    # Prefect's Dask task runner on a local cluster of 2 workers, how the study scales out (threads: test_flow)
    options = FlowOptions(root=root, targets=(), max_parallel=2, retries=0, retry_delay_s=0, runner="dask",
                          address=None)
    states = run_study(options)
    items = list(yaml.safe_load((root / "params.yaml").read_text())["study"]["items"])
    expected = ["collect", "collect_pretrain", "pretrain", "lam", "action_vq", "extract",
                *(f"finetune@{i}" for i in items),
                *(f"evaluate@{i}" for i in items), "reference", "evaluate_reference", "evaluate_expert", "report"]
    assert sorted(states) == sorted(expected)
    assert set(states.values()) == {"Completed"}, states
    assert dvc_status(root, ()) == {}

    # Run again by a plain `dvc repro`, from scratch, a training and an evaluation write byte-identical outputs.
    first = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    shutil.rmtree(root / "checkpoints/finetune/la_tok-0")
    for stage in ("finetune@la_tok-0", "evaluate@la_tok-0"):
        dvc(root, "repro", "-f", "--single-item", stage)
        fresh = yaml.safe_load((root / "dvc.lock").read_text())["stages"][stage]
        assert fresh["outs"] == first[stage]["outs"], stage

    report = json.loads((root / "metrics/report.json").read_text())
    assert set(report["success"]) == {item.split("-")[0] for item in items}
    assert set(report["references"]) == {"expert", "reference"}
    assert (root / "reports/study.md").read_text().startswith("#")

    # demos -> LAM, tokenizer -> tokens; pretraining demos -> start; -> policy -> evaluation
    results = audit(root, ["evaluate@la_tok-0"])
    names = [r.stage.name for r in results]  # upstream first
    assert sorted(names[:-2]) == ["action_vq", "collect", "collect_pretrain", "extract", "lam", "pretrain"]
    assert names[-2:] == ["finetune@la_tok-0", "evaluate@la_tok-0"]
    before = lambda a, b: names.index(a) < names.index(b)  # noqa: E731
    assert before("collect", "lam") and before("lam", "extract") and before("action_vq", "extract")
    assert before("collect_pretrain", "pretrain")
    assert all(not r.findings for r in results), [str(f) for r in results for f in r.findings]
    assert all("output hashes and params agree" in r.mlflow for r in results)

    config = root / "models/finetune/la_tok-0/meta.json"
    config.write_text(config.read_text().replace('"chunk": 4', '"chunk": 5'))
    findings = [str(f) for r in audit(root, ["evaluate@la_tok-0"]) for f in r.findings]
    assert findings and all(f.startswith("finetune@la_tok-0: output models/finetune/la_tok-0 has md5")
                            for f in findings), findings
    assert "models/finetune/la_tok-0" in dvc(root, "status").stdout  # DVC agrees that the output changed
