"""One logging set-up per process."""

from __future__ import annotations

import logging
import sys
import warnings
from typing import TYPE_CHECKING, Any, Iterable, TypeVar

if TYPE_CHECKING:
    from tqdm import tqdm

T = TypeVar("T")

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: int = logging.INFO) -> None:
    """Configure the root logger once; quiet the chattiest third-party loggers."""
    logging.basicConfig(level=level, format=FORMAT, datefmt="%H:%M:%S")
    for name in ("alembic", "mlflow", "urllib3", "git", "httpx", "accelerate"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Meta-World's scripted experts warn on every clipped action; the env clips by design.
    warnings.filterwarnings("ignore", message="Constant\\(s\\) may be too high")


def progress(iterable: Iterable[T] | None = None, **kwargs: Any) -> "tqdm[T]":
    """A tqdm progress bar; in a log file (no terminal) it redraws at most every 30 s instead of 10 times a second."""
    from tqdm import tqdm

    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 30.0)
    return tqdm(iterable, **kwargs)
