"""The ``parquet`` format: a manifest (:mod:`.manifest`) as a Parquet file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from omnifer.data.formats.manifest import manifest_reader
from omnifer.data.readers import register_reader
from omnifer.errors import OmniferError, one_line


def load_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise OmniferError(
            f"cannot read {path} as Parquet ({one_line(exc)}); check the file"
        ) from None


read_parquet = register_reader("parquet")(manifest_reader("parquet", load_parquet))
