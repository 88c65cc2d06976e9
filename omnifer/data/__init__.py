"""Labeled FER data: readers (class folders, CSV/Parquet manifests, saved ``datasets``; one
module per format in :mod:`omnifer.data.formats`), TOML mixtures, the sample table they all
return (:class:`LabeledSet`), the ``on_bad_files`` policy, and the training image cache
(:mod:`omnifer.data.cache`) and batches (:mod:`omnifer.data.batches`, which imports torch).

``import omnifer.data`` does not import torch or datasets.
"""

from omnifer.data import formats  # noqa: F401 - registers every format's reader
from omnifer.data.badfiles import ON_BAD_FILES, check_policy
from omnifer.data.formats.toml import read_spec
from omnifer.data.images import IMAGE_EXTENSIONS, load_image
from omnifer.data.readers import (
    READERS,
    get_reader,
    infer_format,
    read_labeled,
    register_reader,
)
from omnifer.data.table import BadFile, LabeledSet, combine, make_table

__all__ = [
    "BadFile",
    "IMAGE_EXTENSIONS",
    "LabeledSet",
    "ON_BAD_FILES",
    "READERS",
    "check_policy",
    "combine",
    "get_reader",
    "infer_format",
    "load_image",
    "make_table",
    "read_labeled",
    "read_spec",
    "register_reader",
]
