"""The prompt: instruction, the chunk request, then parallel-decoded placeholder tokens; batched with left padding.

Left padding puts every prompt's placeholders at the end; they are still found by token id, never by position.
"""

from __future__ import annotations

import torch

from common.vla.strategies import PLACEHOLDER

REQUEST = "Please predict the next {chunk} robot actions: "


def prompt_text(instruction: str, chunk: int, placeholders: int) -> str:
    """`instruction. Please predict the next K robot actions: ` followed by the placeholder tokens."""
    return f"{instruction.strip().rstrip('.').lower()}. {REQUEST.format(chunk=chunk)}{PLACEHOLDER * placeholders}"


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> (ids, attention mask), both (B, S) int64, padded on the left."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids, mask
