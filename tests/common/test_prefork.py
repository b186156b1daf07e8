"""The pre-forking launcher: a stage handed to it behaves as if started afresh (arguments, directory, environment,
streams, exit status), is stopped when its caller goes away, and runs by itself when there is no launcher."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common import prefork
from tests.flows.toy import hand_over_files

pytestmark = pytest.mark.skipif(not prefork.available(), reason="the launcher forks only on Linux")

TOY_MAIN = """
import json, os, sys, time
from common.prefork import SOCKET_ENV
if sys.argv[1] == "sleep":
    open(sys.argv[2], "w").write(str(os.getpid()))
    time.sleep(60)
if sys.argv[1] == "raise":
    raise ValueError("toy failure")
print(json.dumps({"preloaded": "heavy" in sys.modules, "argv": sys.argv[1:], "cwd": os.getcwd(),
                  "toy_var": os.environ.get("TOY_VAR"), "socket_var": SOCKET_ENV in os.environ,
                  "stdin": sys.stdin.read()}))
print("to stderr", file=sys.stderr)
sys.exit(int(sys.argv[1]))
"""


def _wait_until(check, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def _alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A project with the launcher, a `toy` stage package that hands itself over and a module to preload."""
    files = {**hand_over_files("toy", TOY_MAIN), "heavy.py": "VALUE = 1\n",
             "other.py": "import sys\nimport toy\nprint('heavy' in sys.modules)\n"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.fixture
def launcher(root: Path) -> Iterator[str]:
    """A running launcher (preloading `heavy`) serving `root`; yields its socket."""
    socket_path = root / "launcher.sock"
    process = subprocess.Popen([sys.executable, "-m", "common.prefork", "--socket", str(socket_path),
                                "--preload", "heavy"], cwd=root)
    assert _wait_until(socket_path.exists, 30), "the launcher did not bind its socket"
    yield str(socket_path)
    process.terminate()
    process.wait(timeout=10)


def _toy(root: Path, socket_path: str, *args: str, cwd: Path | None = None, stdin: str = "",
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, prefork.SOCKET_ENV: socket_path, "TOY_VAR": "from the caller", "PYTHONPATH": str(root),
           **(env or {})}
    return subprocess.run([sys.executable, "-m", "toy", *args], cwd=cwd or root, env=env, input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_stage_runs_in_the_launcher_as_if_started_afresh(root: Path, launcher: str) -> None:
    done = _toy(root, launcher, "3", "--flag", stdin="hello")
    assert done.returncode == 3, done.stderr
    seen = json.loads(done.stdout)
    assert seen == {"preloaded": True, "argv": ["3", "--flag"], "cwd": str(root.resolve()),
                    "toy_var": "from the caller", "socket_var": False, "stdin": "hello"}
    assert done.stderr == "to stderr\n"


def test_an_exception_gives_status_1_and_its_traceback(root: Path, launcher: str) -> None:
    done = _toy(root, launcher, "raise")
    assert done.returncode == 1
    assert "ValueError: toy failure" in done.stderr and "Traceback" in done.stderr


def test_without_a_launcher_the_stage_runs_by_itself(root: Path) -> None:
    done = _toy(root, str(root / "no-launcher.sock"), "0")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["preloaded"] is False


def test_a_process_running_another_module_that_imports_the_package_is_not_handed_over(root: Path,
                                                                                      launcher: str) -> None:
    env = {**os.environ, prefork.SOCKET_ENV: launcher, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-m", "other"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "False\n"  # ran here, not in a fork of the launcher (which has `heavy`)


def test_a_rank_of_a_distributed_launch_runs_by_itself(root: Path, launcher: str) -> None:
    done = _toy(root, launcher, "0", env={"WORLD_SIZE": "2"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["preloaded"] is False


def test_a_caller_in_another_directory_is_declined_and_runs_by_itself(root: Path, launcher: str,
                                                                      tmp_path_factory: pytest.TempPathFactory
                                                                      ) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    done = _toy(root, launcher, "0", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["preloaded"] is False and seen["cwd"] == str(elsewhere.resolve())


def test_killing_the_caller_stops_the_stage(root: Path, launcher: str) -> None:
    pid_file = root / "stage.pid"
    env = {**os.environ, prefork.SOCKET_ENV: launcher, "PYTHONPATH": str(root)}
    caller = subprocess.Popen([sys.executable, "-m", "toy", "sleep", str(pid_file)], cwd=root, env=env)
    assert _wait_until(lambda: pid_file.exists() and pid_file.read_text(), 30)
    stage = int(pid_file.read_text())
    assert stage != caller.pid and _alive(stage)  # the stage runs in the launcher's fork, not in the caller
    caller.send_signal(signal.SIGTERM)
    caller.wait(timeout=10)
    assert _wait_until(lambda: not _alive(stage), 15), "the stage outlived its caller"


def test_the_launcher_exits_with_the_process_that_started_it(root: Path) -> None:
    socket_path = root / "orphan.sock"
    starter = subprocess.run(["sh", "-c", f'"{sys.executable}" -m common.prefork --socket "{socket_path}" '
                              "--preload heavy --parent $$ >/dev/null 2>&1 & echo $!"], cwd=root, capture_output=True,
                             text=True, timeout=30)
    launcher = int(starter.stdout.strip())
    assert _wait_until(lambda: not _alive(launcher), 15), "the launcher outlived the process that started it"
