from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.atomic import atomic_path, remove_stale_partials, write_json


def test_atomic_path_renames_on_success_and_deletes_on_error(tmp_path: Path) -> None:
    final = tmp_path / "sub" / "out.txt"
    with atomic_path(final) as tmp:
        tmp.write_text("done")
        assert not final.exists()
    assert final.read_text() == "done"
    with pytest.raises(ValueError):
        with atomic_path(final) as tmp:
            tmp.write_text("half")
            raise ValueError("killed")
    assert final.read_text() == "done" and sorted(p.name for p in final.parent.iterdir()) == ["out.txt"]


def test_stale_partials_are_removed(tmp_path: Path) -> None:
    (tmp_path / "out.json.123.partial").write_text("x")
    (tmp_path / "other.json.5.partial").write_text("x")
    assert [p.name for p in remove_stale_partials(tmp_path / "out.json")] == ["out.json.123.partial"]
    assert [p.name for p in tmp_path.iterdir()] == ["other.json.5.partial"]


def test_write_json_is_sorted_and_stable(tmp_path: Path) -> None:
    write_json(tmp_path / "m.json", {"b": 1, "a": {"d": 2, "c": 3}})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": {"c": 3, "d": 2}, "b": 1}
    assert (tmp_path / "m.json").read_text().index('"a"') < (tmp_path / "m.json").read_text().index('"b"')
