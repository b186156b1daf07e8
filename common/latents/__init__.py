"""Latent sidecars written by `extract` and read by `finetune`: schema, writer, reader, validation."""

from common.latents.reader import LatentFile, validate_sidecar
from common.latents.schema import ACTION_VQ, LAM
from common.latents.writer import write_sidecar

__all__ = ["ACTION_VQ", "LAM", "LatentFile", "validate_sidecar", "write_sidecar"]
