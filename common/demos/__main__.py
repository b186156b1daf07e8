"""`python -m common.demos FILE [--val-fraction F]`: validate a demonstration file of any format and summarise it.

Exit 0 with a summary (format, demos and steps per split, cameras, action and proprio dimensions, tasks and
instructions) when the file is valid; exit 2 with one line per problem otherwise.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from common.demos.reader import DemoReader
from common.demos.schema import DatasetError
from common.demos.splits import DEFAULT_VAL_FRACTION
from common.demos.validate import check


def summary(reader: DemoReader) -> list[str]:
    """The lines that describe a valid file."""
    meta = reader.meta
    parts = []
    for split, names in reader.splits.items():
        steps = sum(reader.steps(name, cameras=()) for name in names)
        parts.append(f"{split} {len(names)} demo(s), {steps} step(s)")
    height, width = meta.image_size
    tasks = Counter((reader.task(name), reader.instruction(name)) for name in reader.names)
    return [
        f"{reader.path}: valid, format {reader.format.name}",
        f"  splits:       {'; '.join(parts)}",
        f"  cameras:      {', '.join(meta.cameras)} ({height}x{width} pixels, height x width)",
        f"  actions:      {meta.action_space.dim}-D ({', '.join(meta.action_space.names)})",
        f"  proprio:      {meta.proprio_dim}-D ({', '.join(meta.proprio_keys)})",
        f"  instructions: {len(tasks)} (task: instruction, demos)",
        *(f"    {task}: {instruction!r}, {count}" for (task, instruction), count in sorted(tasks.items())),
    ]


def main(argv: list[str] | None = None) -> int:
    """Validate and summarise; the exit status is 0 for a valid file and 2 otherwise."""
    parser = argparse.ArgumentParser(prog="python -m common.demos", description=__doc__.split("\n")[0])
    parser.add_argument("file", type=Path, help="a demonstration file (HDF5), e.g. data/demos.hdf5")
    parser.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                        help="share of demos held out for validation in a file that declares no splits "
                             f"(default {DEFAULT_VAL_FRACTION})")
    args = parser.parse_args(argv)
    try:
        with DemoReader(args.file, args.val_fraction) as reader:
            check(reader)
            lines = summary(reader)
    except DatasetError as exc:
        print(exc, file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
