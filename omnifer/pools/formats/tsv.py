"""The ``tsv`` pool source: MS-Celeb-1M style tab-separated lines with a base64 image column."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from omnifer.errors import OmniferError, one_line
from omnifer.pools.source import (
    PoolItem,
    PoolSource,
    Scan,
    files_of,
    no_item,
    register_pool_source,
    split_key,
)


@register_pool_source("tsv")
class TsvSource(PoolSource):
    """Tab-separated lines with a base64 image column; keys ``<file>:<line number>`` (from 1)."""

    rule = "a .tsv file, or a folder of .tsv files"
    defaults = {"column": -1}

    @classmethod
    def matches(cls, path: Path, scan: Scan) -> bool:
        return scan.has((".tsv",))

    def _open(self) -> None:
        column = self.options["column"]
        try:
            ok = not isinstance(column, bool) and int(column) == float(column)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise OmniferError(f"column={column!r} for the tsv source is not a column index; give "
                               "an integer (0 = first column, -1 = last)")
        self.options["column"] = int(column)
        self._files = files_of(self.path, (".tsv",), "tsv")
        self._lines: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # name -> line numbers, offsets

    def _list(self) -> list[str]:
        keys: list[str] = []
        for name, path in self._files.items():
            numbers: list[int] = []
            offsets: list[int] = []
            offset = 0
            with open(path, "rb") as fh:
                for number, line in enumerate(fh, 1):
                    if len(line) > 2 or line.strip():
                        numbers.append(number)
                        offsets.append(offset)
                    offset += len(line)
            self._lines[name] = (np.asarray(numbers, dtype=np.int64),
                                 np.asarray(offsets, dtype=np.int64))
            keys += [f"{name}:{n}" for n in numbers]
        return keys

    def read(self, keys: Sequence[str]) -> Iterator[PoolItem]:
        self._listed()
        column = self.options["column"]
        for key in keys:
            loc = split_key(key, ":", self._lines)
            offset = -1
            if not isinstance(loc, str):
                numbers, offsets = self._lines[loc[0]]
                pos = int(np.searchsorted(numbers, loc[1]))
                if pos < len(numbers) and numbers[pos] == loc[1]:
                    offset = int(offsets[pos])
                else:
                    loc = no_item(key)
            if isinstance(loc, str):
                yield PoolItem(key, None, loc)
                continue
            try:
                fh = self._file(self._files[loc[0]])
                fh.seek(offset)
                fields = fh.readline().rstrip(b"\r\n").split(b"\t")
            except OSError as exc:
                yield PoolItem(key, None, f"cannot read line {loc[1]} ({one_line(exc)})")
                continue
            if not -len(fields) <= column < len(fields):
                yield PoolItem(key, None, f"line {loc[1]} has {len(fields)} columns, no column "
                                          f"{column}; set column= to the image column")
                continue
            try:
                data = base64.b64decode(fields[column].strip(), validate=True)
            except (binascii.Error, ValueError) as exc:
                yield PoolItem(key, None, f"column {column} of line {loc[1]} is not valid base64 "
                                          f"({one_line(exc)})")
                continue
            if not data:
                yield PoolItem(key, None, f"column {column} of line {loc[1]} is empty")
                continue
            yield PoolItem(key, data)
