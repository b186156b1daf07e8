"""Tiny DVC projects for the flow and audit tests: git + DVC repositories in a temporary folder.

`toy_repo` writes a dvc.yaml whose stages run `stage.py` (below), so that concurrency, failure, retries and
lineage can be observed in seconds, without the study's real stages.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from common.config import apply_overrides

PROJECT = Path(__file__).resolve().parents[2]

# One script for every toy stage. `sleep NAME SECONDS`: record start/end times in out/NAME.json;
# `join`: read both, write out/join.json and a folder out/join_dir inside a StageRun (the stage's own MLflow run);
# `fail`: append a line to $TOY_ATTEMPTS, then exit 1.
STAGE_SCRIPT = textwrap.dedent('''
    import json, os, sys, time
    from pathlib import Path

    kind = sys.argv[1]
    Path("out").mkdir(exist_ok=True)
    if kind == "sleep":
        start = time.time()
        time.sleep(float(sys.argv[3]))
        Path(f"out/{sys.argv[2]}.json").write_text(json.dumps({"start": start, "end": time.time()}))
    elif kind == "join":
        from common.config import load_section
        from common.tracking import StageRun, TrackingParams
        tracking = load_section(Path("params.yaml"), "tracking", TrackingParams)
        with StageRun("join", {"scale": 2}, tracking, Path(".")) as run:
            parts = [json.loads(Path(f"out/{n}.json").read_text()) for n in ("a", "b")]
            Path("out/join.json").write_text(json.dumps({"start": time.time(), "parts": parts}))
            Path("out/join_dir").mkdir(exist_ok=True)
            for name in ("x", "y"):
                Path(f"out/join_dir/{name}.txt").write_text(f"{name} {len(parts)}")
            run.log_metrics({"parts": len(parts)})
    elif kind == "fail":
        with open(os.environ["TOY_ATTEMPTS"], "a") as handle:
            handle.write("attempt\\n")
        sys.exit(1)
''')


def git(root: Path, *args: str) -> str:
    """Run git in `root` (quietly, with a fixed identity)."""
    command = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args]
    return subprocess.run(command, cwd=root, check=True, capture_output=True, text=True).stdout


def dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run this interpreter's DVC in `root`."""
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, check=check, capture_output=True, text=True)


def init_repo(root: Path, dvc_yaml: dict, params: dict, files: dict[str, str]) -> Path:
    """A git + DVC repository at `root` holding `files`, dvc.yaml and params.yaml, all committed."""
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / ".gitignore").write_text("mlflow.db\nmlruns/\n")
    git(root, "init", "-q")
    dvc(root, "init", "-q")
    dvc(root, "config", "core.analytics", "false")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "toy project")
    return root


def tracking_section() -> dict:
    """A `tracking` params section writing to the repository's own sqlite store (experiment `toy`)."""
    return {"enabled": True, "uri": "", "experiment": "toy"}


def toy_repo(root: Path, sleep_s: float = 3.0) -> Path:
    """Two independent matrix items `sleep@a`, `sleep@b` (each sleeps), and `join`, which reads both."""
    stages = {
        "sleep": {
            "matrix": {"name": ["a", "b"]},
            "cmd": f"python stage.py sleep ${{item.name}} {sleep_s}",
            "deps": ["stage.py"],
            "params": ["toy"],
            "outs": ["out/${item.name}.json"],
        },
        "join": {
            "cmd": "python stage.py join",
            "deps": ["stage.py", "out/a.json", "out/b.json"],
            "outs": ["out/join.json", "out/join_dir"],
        },
    }
    return init_repo(root, {"stages": stages}, {"tracking": tracking_section(), "toy": {"n": 1}},
                     {"stage.py": STAGE_SCRIPT})


def failing_repo(root: Path) -> Path:
    """`ok` succeeds, `boom` always fails, `after` reads boom's output (so it must never run)."""
    stages = {
        "ok": {"cmd": "python stage.py sleep ok 0", "deps": ["stage.py"], "outs": ["out/ok.json"]},
        "boom": {"cmd": "python stage.py fail", "deps": ["stage.py"], "outs": ["out/boom.json"]},
        "after": {"cmd": "python stage.py sleep after 0", "deps": ["out/boom.json"], "outs": ["out/after.json"]},
    }
    return init_repo(root, {"stages": stages}, {"tracking": tracking_section()}, {"stage.py": STAGE_SCRIPT})


def project_files() -> dict[str, str]:
    """The project's DAG and the code its stages run (dvc.yaml, params.yaml, common/, stages/, .dvcignore):
    tracked files and new ones git does not ignore, as they are in the working tree now."""
    listed = git(PROJECT, "ls-files", "--cached", "--others", "--exclude-standard", "--", "dvc.yaml", "params.yaml",
                 ".dvcignore", "common", "stages").splitlines()
    return {name: (PROJECT / name).read_text() for name in listed if (PROJECT / name).is_file()}


def project_repo(root: Path, overrides: Path) -> Path:
    """A temporary git + DVC copy of the project, its params.yaml with the dotted-key `overrides` file applied (e.g.
    configs/smoke.yaml)."""
    files = project_files()
    dvc_yaml = yaml.safe_load(files.pop("dvc.yaml"))
    params = apply_overrides(yaml.safe_load(files.pop("params.yaml")), yaml.safe_load(overrides.read_text()),
                             str(overrides))
    return init_repo(root, dvc_yaml, params, files)
