"""The ``hf`` pool source: a folder written by ``datasets.Dataset.save_to_disk``."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from omnifer.errors import OmniferError, one_line
from omnifer.pools.formats.parquet import cell_bytes
from omnifer.pools.source import BATCH, PoolItem, PoolSource, Scan, no_item, register_pool_source


@register_pool_source("hf")
class HfSource(PoolSource):
    """A ``datasets.Dataset.save_to_disk`` folder, image column undecoded; keys ``hf:<row>``."""

    rule = "a folder written by datasets' save_to_disk (state.json / dataset_info.json)"
    defaults = {"column": None}
    _transient = ("_ds",)

    @classmethod
    def matches(cls, path: Path, scan: Scan) -> bool:
        return path.is_dir() and any(
            (path / f).is_file() for f in ("state.json", "dataset_info.json", "dataset_dict.json"))

    def _open(self) -> None:
        if not self.path.is_dir():
            raise OmniferError(f"{self.path} is not a folder; the hf source reads a folder "
                               "written by datasets.Dataset.save_to_disk")
        if self.options["column"] is not None and not isinstance(self.options["column"], str):
            raise OmniferError(f"column={self.options['column']!r} for the hf source is not a "
                               "column name; give the image column's name")
        self._count = -1

    def _dataset(self) -> Any:
        """The image column as an arrow-formatted dataset (loaded once per process)."""
        self._fresh()
        if self._ds is not None:
            return self._ds
        from datasets import Image as HFImage
        from datasets import Value, load_from_disk

        root = str(self.path)
        try:
            ds = load_from_disk(root)
        except Exception as exc:  # FileNotFoundError, arrow errors on a damaged folder
            raise OmniferError(f"{root} is not a readable save_to_disk folder ({one_line(exc)}); "
                               "write it with Dataset.save_to_disk") from None
        if not hasattr(ds, "features"):
            splits = list(ds)
            raise OmniferError(f"{root} holds several splits ({', '.join(splits)}); point to one "
                               f"split folder, e.g. {os.path.join(root, splits[0])}")
        feats = ds.features
        images = [c for c, f in feats.items() if isinstance(f, HFImage)]
        column = self.options["column"]
        if column is None:
            if "image" not in images and len(images) != 1:
                raise OmniferError(f"{root} has {len(images)} Image columns "
                                   f"({', '.join(images) or 'none'}); name one with column=NAME")
            column = "image" if "image" in images else images[0]
        elif column not in feats:
            raise OmniferError(f"{root} has no column {column!r} (columns: "
                               f"{', '.join(feats)}); set column= to the image column")
        elif not (column in images or (isinstance(feats[column], Value)
                                       and feats[column].dtype in ("binary", "large_binary"))):
            raise OmniferError(f"{root} column {column!r} is {feats[column]!r}, not an Image or "
                               "binary column; set column= to the image column")
        ds = ds.select_columns([column])
        if column in images and feats[column].decode:
            ds = ds.cast_column(column, HFImage(decode=False))
        self._column = column
        self._ds = ds.with_format("arrow")
        return self._ds

    def _list(self) -> list[str]:
        self._count = len(self._dataset())
        return [f"hf:{row}" for row in range(self._count)]

    def _locate(self, key: str) -> int | str:
        prefix, _, row = str(key).partition(":")
        if prefix != "hf" or not row.isdigit() or int(row) >= self._count:
            return no_item(key)
        return int(row)

    def read(self, keys: Sequence[str]) -> Iterator[PoolItem]:
        self._listed()
        ds = self._dataset()
        keys = list(keys)
        for lo in range(0, len(keys), BATCH):
            batch = keys[lo:lo + BATCH]
            locs = [self._locate(k) for k in batch]
            rows = [loc for loc in locs if not isinstance(loc, str)]
            try:
                cells = iter(ds[rows].column(self._column).to_pylist() if rows else [])
            except Exception as exc:  # a damaged arrow file
                reason = f"cannot read rows of {self.path} ({one_line(exc)})"
                yield from (PoolItem(k, None, reason) for k in batch)
                continue
            for key, loc in zip(batch, locs):
                data = loc if isinstance(loc, str) else cell_bytes(next(cells), self.path)
                yield PoolItem(key, None, data) if isinstance(data, str) else PoolItem(key, data)
