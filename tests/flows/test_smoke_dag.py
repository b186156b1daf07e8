"""The real stages end to end through the flow, in a temporary git + DVC copy of the project (tiny params):
`dvc status` clean afterwards, the audit passes, and a modified model is caught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.audit import audit
from flows.study import FlowOptions, dvc_status, run_study
from tests.flows.toy import dvc, project_repo
from tests.stages.test_collect import TINY as TINY_COLLECT
from tests.stages.test_lam import TINY as TINY_LAM

TARGETS = ("lam",)  # the lead's smoke params file will widen this to the whole DAG


@pytest.mark.slow
def test_smoke_dag_through_the_flow_then_audit(tmp_path: Path) -> None:
    overrides = {
        "tracking": {"enabled": True, "uri": "", "experiment": "smoke"},
        "collect": {**TINY_COLLECT, "tasks": ["drawer-open-v3"], "demos_per_task": 2, "val_demos_per_task": 1,
                    "heldout_layouts_per_task": 1, "workers": 1},
        "lam": {**TINY_LAM, "model": {**TINY_LAM["model"], "patch_size": 8}},
    }
    root = project_repo(tmp_path / "repo", overrides)
    options = FlowOptions(root=root, targets=TARGETS, max_parallel=2, retries=0, retry_delay_s=0, runner="thread",
                          address=None)
    assert run_study(options) == {"collect": "Completed", "lam": "Completed"}
    assert dvc_status(root, TARGETS) == {}
    assert json.loads((root / "metrics/lam.json").read_text())["train_steps"] == TINY_LAM["train"]["steps"]

    results = audit(root, list(TARGETS))
    assert [r.stage.name for r in results] == ["collect", "lam"]
    assert all(not r.findings for r in results), [str(f) for r in results for f in r.findings]
    assert all("output hashes and params agree" in r.mlflow for r in results)

    meta = root / "models/lam/meta.json"
    meta.write_text(meta.read_text().replace('"gap": 2', '"gap": 3'))
    findings = [str(f) for r in audit(root, list(TARGETS)) for f in r.findings]
    assert findings and all(f.startswith("lam: output models/lam has md5") for f in findings), findings
    assert "models/lam" in dvc(root, "status").stdout  # DVC agrees that the output changed
