"""A stage asking the pre-forking launcher for other CPU kernel settings than the launcher's runs by itself: in a fork
it would run the kernels torch chose in the launcher, not the ones its environment asks for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common import cpu, prefork
from tests.flows.toy import hand_over_files

pytestmark = pytest.mark.skipif(not prefork.available(), reason="the launcher forks only on Linux")

TOY_MAIN = """
import json, os, sys
print(json.dumps({"forked": "heavy" in sys.modules, "aten": os.environ.get("ATEN_CPU_CAPABILITY")}))
"""


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A launcher (preloading `heavy`) serving a project with a `toy` stage package; yields the root and socket."""
    for name, text in {**hand_over_files("toy", TOY_MAIN), "heavy.py": "VALUE = 1\n"}.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    socket_path = tmp_path / "launcher.sock"
    process = subprocess.Popen([sys.executable, "-m", "common.prefork", "--socket", str(socket_path),
                                "--preload", "heavy"], cwd=tmp_path)
    deadline = time.monotonic() + 30
    while not socket_path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert socket_path.exists(), "the launcher did not bind its socket"
    yield tmp_path, str(socket_path)
    process.terminate()
    process.wait(timeout=10)


def run_toy(root: Path, socket_path: str, **env: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "toy"], cwd=root, capture_output=True, text=True, timeout=60,
                          env={**os.environ, prefork.SOCKET_ENV: socket_path, "PYTHONPATH": str(root), **env})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_caller_with_other_kernel_settings_runs_by_itself(launcher: tuple[Path, str]) -> None:
    root, socket_path = launcher
    assert run_toy(root, socket_path)["forked"]  # the launcher's settings: forked
    seen = run_toy(root, socket_path, ATEN_CPU_CAPABILITY="default")
    assert seen == {"forked": False, "aten": "default"}
    assert not run_toy(root, socket_path, MKL_ENABLE_INSTRUCTIONS="SSE4_2")["forked"]


def test_the_launcher_compares_every_kernel_variable() -> None:
    assert all(name.startswith(prefork.KERNEL_ENV_PREFIXES) for name in cpu.KERNEL_ENV)
