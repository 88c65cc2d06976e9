"""The ``csv`` format: a manifest (:mod:`.manifest`) as CSV, or tab-separated for ``.tsv``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from omnifer.data.formats.manifest import manifest_reader
from omnifer.data.readers import register_reader
from omnifer.errors import OmniferError, one_line


def load_csv(path: Path) -> pd.DataFrame:
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        return pd.read_csv(path, dtype=str, sep=sep, encoding="utf-8-sig", skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise OmniferError(f"{path} is empty; a manifest needs a header row") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise OmniferError(
            f"cannot parse {path} as CSV ({one_line(exc)}); check quoting and delimiters"
        ) from None


read_csv = register_reader("csv")(manifest_reader("csv", load_csv))
