"""Golden ids of a seeded tiny extraction: regenerate with `python -m tests.golden.extract.regenerate`.

The run: tests.synthetic's moving-square dataset (seed 0), the tiny LAM of tests/stages/test_lam.py and the tiny
tokenizer of tests/stages/test_action_vq.py trained for their 4 steps, then `extract`. ids.npz holds every demo's
LAM codes and action tokens concatenated in demo order. Regenerate only after a deliberate change to the models,
the training loop or the extraction (and say so in the commit): tests/stages/test_extract.py compares against it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.latents import ACTION_VQ, LAM, LatentFile
from common.tracking import TrackingParams
from stages.action_vq import DEMOS
from stages.action_vq.__main__ import main as action_vq_main
from stages.extract import ACTION_TOKENS, LAM_CODES
from stages.extract import Params as ExtractParams
from stages.extract.__main__ import main as extract_main
from stages.lam.__main__ import main as lam_main
from tests.stages.test_action_vq import tiny as tiny_action_vq
from tests.stages.test_lam import tiny as tiny_lam
from tests.synthetic import write_moving_square_dataset

GOLDEN = Path(__file__).with_name("ids.npz")
OFF = TrackingParams(enabled=False, uri="", experiment="golden")
BATCH_SIZE = 16  # smaller than the dataset: batches cross demo boundaries


def build_tiny_run(root: Path) -> dict:
    """Dataset, tiny LAM, tiny tokenizer and the extraction, all under `root`; returns extract's metrics."""
    torch.set_num_threads(1)  # as action_vq and extract run; the tiny LAM is trained under the same setting
    write_moving_square_dataset(root / DEMOS)
    lam_main(tiny_lam(), OFF, root)
    action_vq_main(tiny_action_vq(), OFF, root)
    return extract_main(ExtractParams(batch_size=BATCH_SIZE), OFF, root)


def extracted_ids(root: Path) -> dict[str, np.ndarray]:
    """Every demo's LAM codes and action tokens, concatenated in demo order."""
    out = {}
    for path, kind, field in ((LAM_CODES, LAM, "codes"), (ACTION_TOKENS, ACTION_VQ, "tokens")):
        with LatentFile(root / path, kind) as latents:
            out[f"{kind}_{field}"] = np.concatenate([latents.episode(n)[field] for n in latents.names()])
    return out


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_run(Path(tmp))
        ids = extracted_ids(Path(tmp))
    np.savez(GOLDEN, **ids)
    print(f"wrote {GOLDEN}: " + ", ".join(f"{k} {v.shape}" for k, v in ids.items()))
