"""Demonstration datasets on HDF5 in LIBERO's robomimic layout: schema, writer, reader, validator."""

from common.demos.reader import DemoReader
from common.demos.schema import ActionSpace, DatasetError, DatasetMeta, Episode, Stats
from common.demos.validate import training_demos, validate_file
from common.demos.writer import DemoWriter

__all__ = [
    "ActionSpace",
    "DatasetError",
    "DatasetMeta",
    "DemoReader",
    "DemoWriter",
    "Episode",
    "Stats",
    "training_demos",
    "validate_file",
]
