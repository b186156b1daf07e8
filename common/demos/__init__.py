"""Demonstration datasets on HDF5: schema, writer, one reader for every registered format, validator.

Formats: native.py (this project's files) and libero.py (LIBERO's released files); formats.py says how to add one.
"""

from common.demos import libero, native  # noqa: F401  (registers the formats)
from common.demos.formats import FORMATS, DemoFormat
from common.demos.reader import DemoReader
from common.demos.schema import ActionSpace, DatasetError, DatasetMeta, Episode, Stats
from common.demos.splits import DEFAULT_VAL_FRACTION
from common.demos.validate import training_demos, validate_file
from common.demos.writer import DemoWriter

__all__ = [
    "DEFAULT_VAL_FRACTION",
    "FORMATS",
    "ActionSpace",
    "DatasetError",
    "DatasetMeta",
    "DemoFormat",
    "DemoReader",
    "DemoWriter",
    "Episode",
    "Stats",
    "training_demos",
    "validate_file",
]
