"""`python -m common.demos FILE`: a summary and exit 0 for a valid file of either format, exit 2 with the problems."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.demos.__main__ import main
from tests.common.test_demos import _edit, make_episode, write, write_libero_file

ROOT = Path(__file__).resolve().parents[2]


def test_summarises_a_native_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "demos.hdf5", [make_episode(i, length=4 + i, split="val" if i == 2 else "train")
                                           for i in range(3)])
    assert main([str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{path}: valid, format native"
    assert "splits:       train 2 demo(s), 9 step(s); val 1 demo(s), 6 step(s)" in out[1]
    assert "cameras:      corner, gripperPOV (8x8 pixels" in out[2]
    assert "actions:      4-D (dx, dy, dz, gripper)" in out[3]
    assert "proprio:      4-D (ee_pos, gripper_states)" in out[4]
    assert out[-1] == "    drawer-open-v3: 'pull the drawer open by its handle', 3"


def test_summarises_a_libero_file_in_a_subprocess(tmp_path: Path) -> None:
    path = tmp_path / "libero.hdf5"
    write_libero_file(path, length=6, demos=4)
    done = subprocess.run([sys.executable, "-m", "common.demos", str(path), "--val-fraction", "0.5"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{path}: valid, format libero" in done.stdout
    assert "train 2 demo(s), 12 step(s); val 2 demo(s), 12 step(s)" in done.stdout
    assert "agentview, eye_in_hand (128x128 pixels" in done.stdout
    assert "7-D (dx, dy, dz, droll, dpitch, dyaw, gripper)" in done.stdout
    assert "8-D (ee_states, gripper_states)" in done.stdout
    assert "libero_kitchen_tabletop_manipulation: 'open the top drawer of the cabinet', 4" in done.stdout


def test_bad_file_exits_2_with_one_line_per_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "demos.hdf5", [make_episode(0), make_episode(1)])
    _edit(path, lambda f: (f["data/demo_1/actions"].__setitem__((2, 1), np.nan),
                           f["data/demo_0/obs/ee_pos"].__setitem__((3, 2), np.inf)))
    assert main([str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines[0] == f"{path}: 2 problem(s):"
    assert lines[1] == "  - demo_0/obs/ee_pos: 1 NaN/inf value(s), the first (inf) at step 3, dimension 2"
    assert lines[2] == "  - demo_1/actions: 1 NaN/inf value(s), the first (nan) at step 2, dimension 1"
    assert lines[3].startswith("Next step: ")


@pytest.mark.parametrize("case", ["missing", "not hdf5", "bad fraction"])
def test_unusable_file_or_argument_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    path = tmp_path / "demos.hdf5"
    args = [str(path)]
    if case == "not hdf5":
        path.write_bytes(b"not an HDF5 file")
    elif case == "bad fraction":
        write_libero_file(path)
        args += ["--val-fraction", "1.5"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(f"{path}: ") and "Next step" in err
