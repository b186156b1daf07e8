"""The command line every stage shares: `python -m stages.<name> [--params FILE] [--root DIR]`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, TypeVar

from common.config import ParamsError, load_section
from common.demos.schema import DatasetError
from common.logs import setup_logging
from common.tracking import TrackingParams

P = TypeVar("P")
log = logging.getLogger(__name__)


class StageError(RuntimeError):
    """A stage cannot go on; the message says why and what to do next."""


def load_stage_params(path: Path, stage: str, cls: type[P]) -> tuple[P, TrackingParams]:
    """Load the stage's section and the shared `tracking` section, reporting both sections' problems at once."""
    results, problems = [], []
    for section, section_cls in ((stage, cls), ("tracking", TrackingParams)):
        try:
            results.append(load_section(path, section, section_cls))
        except ParamsError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ParamsError(str(path), problems)
    return results[0], results[1]


def run_stage(stage: str, cls: type[P], main: Callable[[P, TrackingParams, Path], object]) -> None:
    """Parse the shared flags, load params, run `main`; known errors exit with status 2 and a clear message."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{stage}", description=f"Run the `{stage}` stage.")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    parser.add_argument("--root", type=Path, default=Path("."), help="folder the outputs are written under")
    args = parser.parse_args()
    setup_logging()
    try:
        params, tracking = load_stage_params(args.params, stage, cls)
        main(params, tracking, args.root)
    except (ParamsError, DatasetError, StageError) as exc:
        log.error("stage %s failed:\n%s", stage, exc)
        sys.exit(2)
