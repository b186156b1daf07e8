"""Where a result came from: the git commit and a content fingerprint of the code that produced it."""

from __future__ import annotations

import hashlib
import logging
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def git_commit(root: Path = PROJECT_ROOT) -> str:
    """The checked-out commit, with '-dirty' when tracked files differ from it; 'unknown' outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        log.warning("not a git checkout (%s): runs are recorded with git commit 'unknown'", root)
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def code_fingerprint(*paths: str, root: Path = PROJECT_ROOT) -> str:
    """sha256 (first 16 hex digits) over the Python sources under the given files and folders.

    Stored in outputs instead of the git commit: it changes only when the code that made the output changes,
    so an unrelated commit leaves the output's bytes, and DVC's hash of it, unchanged. Pass the same paths as
    the stage's code deps in dvc.yaml.
    """
    digest = hashlib.sha256()
    for entry in sorted(paths):
        base = root / entry
        files = [base] if base.is_file() else sorted(base.rglob("*.py"))
        if not files:
            raise FileNotFoundError(f"code_fingerprint: nothing at {base}")
        for path in files:
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def file_sha256(path: Path) -> str:
    """Content hash of a file (hex), read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
