"""The ``parquet`` pool source: Parquet files with a binary or ``{bytes, path}`` image column.

:func:`cell_bytes` turns such a cell into image bytes; the ``hf`` source uses it too.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from omnifer.errors import OmniferError, one_line
from omnifer.pools.source import (
    BATCH,
    MAX_OPEN_FILES,
    PoolItem,
    PoolSource,
    Scan,
    files_of,
    no_item,
    register_pool_source,
    runs,
    split_key,
)


def usable_column(arrow_type: Any) -> bool:
    """Whether an arrow column of this type can hold images (binary or ``{bytes, ...}``)."""
    import pyarrow as pa

    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return True
    return pa.types.is_struct(arrow_type) and arrow_type.get_field_index("bytes") >= 0


def image_column(schema: Any, wanted: str | None, where: str) -> str:
    """The image column of an arrow schema: ``wanted``, else ``image``, else the only candidate."""
    names = list(schema.names)
    if wanted is not None:
        if wanted not in names:
            raise OmniferError(f"{where} has no column {wanted!r} (columns: {', '.join(names)}); "
                               "set column= to the image column")
        if not usable_column(schema.field(wanted).type):
            raise OmniferError(f"{where} column {wanted!r} is {schema.field(wanted).type}, not "
                               "binary or a {bytes, path} struct; set column= to the image column")
        return wanted
    if "image" in names and usable_column(schema.field("image").type):
        return "image"
    found = [f.name for f in schema if usable_column(f.type)]
    if len(found) != 1:
        raise OmniferError(
            f"{where} has {len(found)} image-like columns ({', '.join(found) or 'none'} among "
            f"{', '.join(names)}); name the binary or {{bytes, path}} column with column=NAME"
        )
    return found[0]


def cell_bytes(value: Any, base: Path) -> bytes | str:
    """Image bytes of a binary or ``{bytes, path}`` cell, or why there are none."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value) or "the image cell is empty"
    if value is None:
        return "no image in this row"
    from omnifer.data.images import image_value_bytes

    try:
        return image_value_bytes(value, base=str(base))
    except FileNotFoundError as exc:
        missing = value.get("path") if isinstance(value, dict) else None
        return f"image file not found: {missing}" if missing else one_line(exc)
    except OSError as exc:
        return f"cannot read the image file ({one_line(exc)})"


@register_pool_source("parquet")
class ParquetSource(PoolSource):
    """Parquet files with an image column; keys ``<file>:<row>`` (from 0), read by row group."""

    rule = "a .parquet file, or a folder of .parquet files"
    defaults = {"column": None}
    _transient = ("_pq",)

    @classmethod
    def matches(cls, path: Path, scan: Scan) -> bool:
        return scan.has((".parquet",))

    def _open(self) -> None:
        if self.options["column"] is not None and not isinstance(self.options["column"], str):
            raise OmniferError(f"column={self.options['column']!r} for the parquet source is not "
                               "a column name; give the image column's name")
        self._files = files_of(self.path, (".parquet",), "parquet")
        self._groups: dict[str, tuple[str, list[int]]] = {}  # name -> column, row-group starts

    def _parquet(self, name: str) -> Any:
        import pyarrow.parquet as pq

        self._fresh()
        if self._pq is None:
            self._pq = {}
        if name not in self._pq:
            if len(self._pq) >= MAX_OPEN_FILES:
                self._pq.pop(next(iter(self._pq)))
            self._pq[name] = pq.ParquetFile(self._files[name])
        return self._pq[name]

    def _list(self) -> list[str]:
        keys: list[str] = []
        for name, path in self._files.items():
            try:
                meta = self._parquet(name).metadata
                schema = self._parquet(name).schema_arrow
            except Exception as exc:  # pyarrow raises several types for a damaged file
                raise OmniferError(f"cannot read {path} as Parquet ({one_line(exc)}); check the "
                                   "file or remove it from the pool") from None
            column = image_column(schema, self.options["column"], str(path))
            starts = [0]
            for g in range(meta.num_row_groups):
                starts.append(starts[-1] + meta.row_group(g).num_rows)
            self._groups[name] = (column, starts)
            keys += [f"{name}:{row}" for row in range(starts[-1])]
        return keys

    def _locate(self, key: str) -> tuple[str, int, int] | str:
        loc = split_key(key, ":", self._groups)
        if isinstance(loc, str):
            return loc
        name, row = loc
        starts = self._groups[name][1]
        if row >= starts[-1]:
            return no_item(key)
        group = bisect.bisect_right(starts, row) - 1
        return name, group, row - starts[group]

    def read(self, keys: Sequence[str]) -> Iterator[PoolItem]:
        self._listed()
        same_group = lambda a, b: a[:2] == b[:2]  # noqa: E731
        for run_keys, locs in runs(keys, self._locate, same_group):
            if isinstance(locs, str):
                yield PoolItem(run_keys[0], None, locs)
                continue
            name, group = locs[0][0], locs[0][1]
            try:
                cells = self._read_rows(name, group, sorted({loc[2] for loc in locs}))
            except Exception as exc:  # a damaged page or column chunk
                reason = f"cannot read row group {group} of {name} ({one_line(exc)})"
                yield from (PoolItem(k, None, reason) for k in run_keys)
                continue
            base = self._files[name].parent
            for key, loc in zip(run_keys, locs):
                data = (cell_bytes(cells[loc[2]], base) if loc[2] in cells
                        else f"row {loc[2]} is missing from row group {group} of {name}")
                yield PoolItem(key, None, data) if isinstance(data, str) else PoolItem(key, data)

    def _read_rows(self, name: str, group: int, rows: list[int]) -> dict[int, Any]:
        """The image cells of ``rows`` (sorted) of one row group, streamed in batches."""
        column = self._groups[name][0]
        cells: dict[int, Any] = {}
        start = 0
        want = 0
        batches = self._parquet(name).iter_batches(batch_size=BATCH, row_groups=[group],
                                                   columns=[column])
        for batch in batches:
            values = batch.column(0)
            end = start + len(values)
            while want < len(rows) and rows[want] < end:
                cells[rows[want]] = values[rows[want] - start].as_py()
                want += 1
            if want == len(rows):
                break
            start = end
        return cells
