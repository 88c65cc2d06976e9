"""The ``parquet`` format: a manifest (:mod:`.manifest`) as a Parquet file; a file whose images
are embedded (the Hub layout) is read by the ``hub`` format (:mod:`.hub`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from omnifer.data.formats.hub import embedded_column, read_hub
from omnifer.data.formats.manifest import manifest_reader
from omnifer.data.readers import register_reader
from omnifer.data.table import LabeledSet
from omnifer.errors import OmniferError, one_line


def load_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise OmniferError(
            f"cannot read {path} as Parquet ({one_line(exc)}); check the file"
        ) from None


read_manifest_parquet = manifest_reader("parquet", load_parquet)


@register_reader("parquet")
def read_parquet(path: Path, **options: Any) -> LabeledSet:
    """A Parquet manifest of image paths, or a Parquet file with the images embedded."""
    import pyarrow.parquet as pq

    try:
        embedded = path.is_file() and embedded_column(pq.read_schema(path)) is not None
    except Exception:  # not Parquet: the manifest reader says what is wrong
        embedded = False
    return (read_hub if embedded else read_manifest_parquet)(path, **options)
