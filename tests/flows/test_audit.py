"""The audit command: a clean chain passes; a tampered file, a broken chain or a stale MLflow record fails it."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from common.audit import audit, find_reported_number
from common.dvc_graph import GraphError, read_stages
from common.study_runs import open_study_run, record_stage_lineage
from common.tracking import TrackingParams
from flows.audit import main
from tests.flows.toy import PROJECT, dvc, toy_repo

TRACKING = TrackingParams(enabled=True, uri="", experiment="toy")


def run_audit(root: Path, monkeypatch: pytest.MonkeyPatch, *flags: str) -> int:
    """The command's exit status (0: everything agrees)."""
    monkeypatch.setattr(sys, "argv", ["audit", "--root", str(root), *flags])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def record_lineage(root: Path) -> None:
    """What the study flow does after each stage: tag the stage's child run with its dvc.lock entry."""
    parent = open_study_run(TRACKING, root, "study", {})
    for stage in read_stages(root):
        record_stage_lineage(TRACKING, root, parent, stage)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy project, reproduced with `dvc repro` and its lineage recorded (shared: the tests copy nothing)."""
    root = toy_repo(tmp_path_factory.mktemp("audit") / "repo", sleep_s=0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(PROJECT))
        dvc(root, "repro")
    record_lineage(root)
    return root


def test_clean_chain_passes_and_prints_hashes(built: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    results = audit(built, ["join"])
    assert [r.stage.name for r in results] == ["sleep@a", "sleep@b", "join"]
    assert all(not r.findings for r in results), [str(f) for r in results for f in r.findings]
    join = results[-1]
    assert {o.path: o.on_disk == o.locked for o in join.outputs} == {"out/join.json": True, "out/join_dir": True}
    assert [o.locked for o in join.outputs if o.path == "out/join_dir"][0].endswith(".dir")  # DVC's folder md5
    assert "output hashes and params agree" in join.mlflow
    assert run_audit(built, monkeypatch, "--metric", "out/join.json:parts") == 0
    printed = capsys.readouterr().out
    assert "reported number: out/join.json:parts" in printed and "== sleep@a" in printed and "toy.n=1" in printed


def test_reported_number_must_exist(built: Path) -> None:
    stages = read_stages(built)
    assert find_reported_number(built, stages, "out/a.json:start").stage == "sleep@a"
    with pytest.raises(GraphError, match="no key 'rate'"):
        find_reported_number(built, stages, "out/a.json:rate")
    with pytest.raises(GraphError, match="no stage in dvc.yaml writes"):
        find_reported_number(built, stages, "out/zzz.json:x")


@pytest.mark.parametrize("victim", ["out/a.json", "out/join_dir/y.txt"])
def test_tampered_artifact_is_caught(built: Path, victim: str, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = built / victim
    original = path.read_bytes()
    try:
        path.write_bytes(original + b" ")
        assert run_audit(built, monkeypatch, "--stage", "join") == 1
        errors = capsys.readouterr().err
        owner, out = ("sleep@a", "out/a.json") if victim == "out/a.json" else ("join", "out/join_dir")
        assert f"{owner}: output {out} has md5" in errors and "modified after the stage ran" in errors
    finally:
        path.write_bytes(original)
    assert run_audit(built, monkeypatch, "--stage", "join") == 0


def test_rerun_upstream_breaks_the_chain_and_the_mlflow_record(built: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(built, tmp_path / "repo"))  # a copy: the other tests keep the clean project
    dvc(root, "repro", "--single-item", "--force", "sleep@b")  # new timestamps: a new out/b.json, join not rerun
    findings = [str(f) for r in audit(root, ["join"]) for f in r.findings]
    assert any(f.startswith("join: input out/b.json had md5") and "chain is broken" in f for f in findings), findings
    assert any(f.startswith("sleep@b: no MLflow run recorded dvc.lock's outputs") for f in findings), findings
    assert len(findings) == 2, findings
    assert json.loads((root / "out/b.json").read_text())["end"] > 0


def test_a_clone_without_the_dvc_cache_gets_one_line_saying_how_to_build_the_outputs(
        built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(shutil.copytree(built, tmp_path / "repo"))
    cached = [o.path for s in read_stages(root) for o in s.outs if o.cached]
    assert cached
    for path in cached:  # what a fresh clone lacks
        shutil.rmtree(root / path) if (root / path).is_dir() else (root / path).unlink()
    assert run_audit(root, monkeypatch, "--stage", "join") == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "not on disk" in lines[0] and "make study" in lines[0], captured.err
    assert "modified" not in captured.err and captured.out == ""
    (root / cached[0]).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(built / cached[0], root / cached[0]) if (built / cached[0]).is_file() else shutil.copytree(
        built / cached[0], root / cached[0])  # one output back: the per-output findings, each naming its fix
    assert run_audit(root, monkeypatch, "--stage", "join") == 1
    errors = capsys.readouterr().err
    assert "is not on disk" in errors and "dvc repro" in errors and "modified after" not in errors
