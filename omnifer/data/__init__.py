"""Labeled FER data: readers (class folders, CSV/Parquet manifests, saved ``datasets``),
TOML mixtures, and the sample table they all return (:class:`LabeledSet`).

``import omnifer.data`` does not import torch or datasets; ``omnifer.data.torch`` holds the
torch ``FaceDataset``.
"""

from omnifer.data.images import IMAGE_EXTENSIONS, load_image
from omnifer.data.readers import (
    READERS,
    get_reader,
    infer_format,
    read_labeled,
    register_reader,
)
from omnifer.data.spec import read_spec
from omnifer.data.table import ON_BAD_FILES, BadFile, LabeledSet, combine, make_table

__all__ = [
    "BadFile",
    "IMAGE_EXTENSIONS",
    "LabeledSet",
    "ON_BAD_FILES",
    "READERS",
    "combine",
    "get_reader",
    "infer_format",
    "load_image",
    "make_table",
    "read_labeled",
    "read_spec",
    "register_reader",
]
