"""Rollout videos as GIFs through Pillow (no video codec dependency)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_gif(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """Write (H, W, 3) uint8 frames as a looping GIF at `fps` frames per second."""
    from PIL import Image

    if not frames:
        raise ValueError(f"{path}: no frames to write")
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    duration_ms = max(20, int(round(1000.0 / fps)))  # GIF delays are in 10 ms units; browsers clamp below 20
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0, optimize=False)
