"""The command line every stage shares: `python -m stages.<name> [--params FILE] [--root DIR] [--<item field> V]`.

Stages that DVC runs as a `matrix:` (one item per strategy and seed, say) declare the item as a frozen dataclass;
each of its fields becomes a required flag, typed and validated like params.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

from common.config import ParamsError, Problem, from_dict, read_yaml, section_of
from common.demos.schema import DatasetError
from common.logs import setup_logging
from common.tracking import TrackingParams

P = TypeVar("P")
ItemT = TypeVar("ItemT")
log = logging.getLogger(__name__)


class StageError(RuntimeError):
    """A stage cannot go on; the message says why and what to do next."""


def load_stage_params(path: Path, stage: str, cls: type[P]) -> tuple[P, TrackingParams]:
    """Load the stage's section and the shared `tracking` section, reporting both sections' problems at once."""
    data = read_yaml(path)  # read once: a missing or malformed file is one problem, not one per section
    results, problems = [], []
    for section, section_cls in ((stage, cls), ("tracking", TrackingParams)):
        try:
            results.append(section_of(data, path, section, section_cls))
        except ParamsError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ParamsError(str(path), problems)
    return results[0], results[1]


def parse_item(cls: type[ItemT], values: dict[str, str]) -> ItemT:
    """Build a matrix item from its command-line strings, typed and range-checked like a params section."""
    raw: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        value: Any = values[field.name]
        if field.type in (int, "int"):
            try:
                value = int(value)
            except ValueError:
                raise ParamsError("command line", [Problem(f"--{field.name}", value, "is not an integer",
                                                           "pass a whole number")]) from None
        raw[field.name] = value
    return from_dict(cls, raw, prefix="item", source="command line")


def params_path() -> Path:
    """The --params flag of this process's command line: for a stage that reads sections besides its own (run_stage
    parses the rest)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser.parse_known_args()[0].params


def run_stage(stage: str, cls: type[P], main: Callable[..., object], item: type[ItemT] | None = None) -> None:
    """Parse the shared flags (and the matrix item's), load params, run `main`; known errors exit 2 with a message.

    `main(params, tracking, root)` or, for a matrix stage, `main(params, tracking, root, item)`.
    """
    parser = argparse.ArgumentParser(prog=f"python -m stages.{stage}", description=f"Run the `{stage}` stage.")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    parser.add_argument("--root", type=Path, default=Path("."), help="folder the outputs are written under")
    for field in dataclasses.fields(item) if item is not None else ():
        parser.add_argument(f"--{field.name}", required=True, help=f"matrix item: {field.name}")
    args = parser.parse_args()
    setup_logging()
    try:
        params, tracking = load_stage_params(args.params, stage, cls)
        if item is None:
            main(params, tracking, args.root)
        else:
            chosen = parse_item(item, {f.name: getattr(args, f.name) for f in dataclasses.fields(item)})
            main(params, tracking, args.root, chosen)
    except (ParamsError, DatasetError, StageError) as exc:
        log.error("stage %s failed:\n%s", stage, exc)
        sys.exit(2)
