"""Atomic outputs: write to a temporary sibling, rename when complete.

A killed or failed stage therefore never leaves a file under its final name that looks finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

PARTIAL_SUFFIX = ".partial"


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success rename it to `final`, on error delete it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.{os.getpid()}{PARTIAL_SUFFIX}")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"atomic write of {final} produced no file at {tmp}")
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_partials(final: Path) -> list[Path]:
    """Delete partial files a killed earlier run left beside `final`; return what was removed."""
    final = Path(final)
    if not final.parent.is_dir():
        return []
    stale = sorted(final.parent.glob(f"{final.name}.*{PARTIAL_SUFFIX}"))
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return stale


def write_json(path: Path, data: Any) -> None:
    """Write `data` as stable, human-readable JSON (sorted keys), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success it replaces `final`, on error it is deleted."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.{os.getpid()}{PARTIAL_SUFFIX}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
