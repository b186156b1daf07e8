"""dvc.yaml is the one DAG: its stages must agree with the code (stage names, code deps, params sections)."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_each_stage_matches_its_package() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, stage in stages.items():
        package = importlib.import_module(f"stages.{name}")
        assert package.STAGE == name
        assert stage["cmd"] == f"python -m stages.{name}"
        assert stage["params"][0] == name and name in params
        code_deps = [d for d in stage["deps"] if d.startswith(("common", "stages"))]
        assert sorted(code_deps) == sorted(package.CODE), f"{name}: dvc.yaml deps differ from {name}.CODE"
        declared = [next(iter(m)) if isinstance(m, dict) else m for m in stage.get("metrics", [])]
        assert package.METRICS.as_posix() in declared
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage["outs"]]
        assert sorted(outs) == sorted(p.as_posix() for p in package.OUTS)
        upstream = [d for d in stage["deps"] if d.startswith("data/")]
        assert sorted(upstream) == sorted(p.as_posix() for p in getattr(package, "INPUTS", ()))
