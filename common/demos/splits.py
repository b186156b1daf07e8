"""Train/val splits: declared per demo (`split` attribute) or, in files that declare none, held out by name.

LIBERO files declare no splits; holding out every k-th demo in the reader's name order (demo_0, demo_1, ...,
demo_10) makes the validation split a function of the file's demo names and the fraction alone, with no random
state, so every stage that reads the file sees the same split.
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py

from common.demos import schema as S

DEFAULT_VAL_FRACTION = 0.1


def held_out(names: list[str], val_fraction: float) -> set[str]:
    """The demos held out for validation: floor(n * fraction) of them, at least one when there are two or more
    (unless the fraction is 0), spread evenly over `names` in the given order."""
    n = len(names)
    if n < 2 or val_fraction == 0:
        return set()
    count = min(n - 1, max(1, math.floor(n * val_fraction + 1e-9)))
    return {names[(2 * i + 1) * n // (2 * count)] for i in range(count)}  # the middle of each of `count` strata


def splits_of(data: h5py.Group, names: list[str], val_fraction: float, path: Path) -> dict[str, str]:
    """Each demo's split: its `split` attribute ("train" where missing), or held out by name when no demo has one."""
    if not 0 <= val_fraction < 1:
        raise S.DatasetError(f"{path}: val_fraction = {val_fraction!r} (the share of demos held out for validation "
                             "in a file that declares no splits) is not in [0, 1). Next step: pass e.g. 0.1")
    declared = {name: data[name].attrs.get(S.ATTR_SPLIT) for name in names}
    if names and all(split is None for split in declared.values()):
        val = held_out(names, val_fraction)
        return {name: "val" if name in val else "train" for name in names}
    return {name: str(split if split is not None else "train") for name, split in declared.items()}
