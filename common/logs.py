"""One logging set-up per process."""

from __future__ import annotations

import logging
import warnings

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: int = logging.INFO) -> None:
    """Configure the root logger once; quiet the chattiest third-party loggers."""
    logging.basicConfig(level=level, format=FORMAT, datefmt="%H:%M:%S")
    for name in ("alembic", "mlflow", "urllib3", "git", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Meta-World's scripted experts warn on every clipped action; the env clips by design.
    warnings.filterwarnings("ignore", message="Constant\\(s\\) may be too high")
