"""This project's own format (schema.py): self-describing metadata, splits declared per demo, upright images."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from common.demos import schema as S
from common.demos.formats import register


class NativeFormat:
    """Files written by DemoWriter: the root attribute `format` names them."""

    name = "native"
    signature = f"a root attribute '{S.ATTR_FORMAT}' (files written by `dvc repro collect`)"
    missing_instruction = f"attrs/{S.ATTR_INSTRUCTION}: missing or empty language instruction"
    next_step = "delete the file and rerun `dvc repro collect` (or fix the file's producer)"

    def recognises(self, file: h5py.File) -> bool:
        """Whether the root carries the `format` attribute DemoWriter writes."""
        return S.ATTR_FORMAT in file.attrs

    def meta(self, file: h5py.File, path: Path, names: list[str]) -> S.DatasetMeta:
        """The DatasetMeta stored as JSON in the root `metadata` attribute, after a format/version check."""
        version = int(file.attrs.get(S.ATTR_FORMAT_VERSION, -1))
        if file.attrs[S.ATTR_FORMAT] != S.FORMAT_NAME or version != S.FORMAT_VERSION:
            raise S.DatasetError(
                f"{path}: format {file.attrs[S.ATTR_FORMAT]!r} version {version}, expected "
                f"{S.FORMAT_NAME!r} version {S.FORMAT_VERSION}. Next step: rerun `dvc repro collect`"
            )
        try:
            return S.DatasetMeta.from_json(str(file.attrs[S.ATTR_METADATA]))
        except (KeyError, TypeError, ValueError) as exc:
            raise S.DatasetError(f"{path}: attribute '{S.ATTR_METADATA}' is malformed ({exc!r})") from exc

    def instruction(self, file: h5py.File, demo: h5py.Group) -> str:
        """The demo's `language_instruction` attribute."""
        return str(demo.attrs.get(S.ATTR_INSTRUCTION, ""))

    def step_keys(self, demo: h5py.Group) -> tuple[str, ...]:
        """Every demo carries success and dones."""
        return (S.SUCCESS, S.DONES)

    def upright(self, frames: np.ndarray) -> np.ndarray:
        """Stored upright already."""
        return frames

    def success(self, demo: h5py.Group, length: int) -> np.ndarray:
        """The stored `success` flags."""
        return demo[S.SUCCESS][()].astype(bool)

    def problems(self, demo: h5py.Group) -> Iterator[str]:
        """Every demo declares its split."""
        split = demo.attrs.get(S.ATTR_SPLIT)
        if split not in S.SPLITS:
            yield f"attrs/{S.ATTR_SPLIT}: {split!r}, expected one of {list(S.SPLITS)}"


NATIVE = register(NativeFormat())
