"""Pool sources: one interface over every form an unlabeled face pool comes in.

A source lists stable keys cheaply (:meth:`PoolSource.keys`) and reads items by key
(:meth:`PoolSource.read`), so an embedding engine can cut the key list into fixed shards,
resume after a crash, embed only keys added later, and read shards in worker processes.
Sources hand out encoded image bytes (video: decoded RGB frames); decoding happens later.
A problem with one item becomes a :class:`PoolItem` with ``error`` set; a source that cannot
be opened at all raises a one-line :class:`~omnifer.errors.OmniferError`.

Sources are picklable: file handles open lazily in each process, and listings travel with
the pickle so that workers do not list the pool again. One source object serves one thread.

:data:`POOL_SOURCES` maps a name to its class in auto-detection order; :func:`open_pool` is
the entry point.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import logging
import math
import os
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np

from omnifer.errors import OmniferError, one_line
from omnifer.pools.recordio import RecordError, read_index, read_record, unpack_payload

log = logging.getLogger(__name__)

#: Image file extensions (compared lower-case), as for labeled folders.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
#: Video file extensions the ``video`` source reads (compared lower-case).
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".mov", ".webm")
_MAX_OPEN_FILES = 16
_BATCH = 256
#: Reading video decodes forward across smaller gaps between requested frames, and seeks across
#: larger ones.
_VIDEO_SEEK_GAP_MS = 5000


@dataclass(frozen=True)
class PoolItem:
    """One pool item: its key, its bytes (or RGB frame), or why it could not be read."""

    key: str
    data: bytes | np.ndarray | None
    error: str | None = None


def item_id(data: bytes | np.ndarray) -> str:
    """Stable id of an item: ``content_id`` of its bytes (of an array: its shape, then bytes)."""
    from omnifer.artifacts import content_id

    if isinstance(data, np.ndarray):
        shape = "x".join(map(str, data.shape)).encode("ascii")
        return content_id(shape + b":" + np.ascontiguousarray(data).tobytes())
    return content_id(bytes(data))


# ====================================================================== registry

POOL_SOURCES: dict[str, type[PoolSource]] = {}


def register_pool_source(name: str) -> Callable[[type[PoolSource]], type[PoolSource]]:
    """Class decorator: register a source under ``name`` (detection tries sources in order)."""

    def wrap(cls: type[PoolSource]) -> type[PoolSource]:
        cls.name = name
        POOL_SOURCES[name] = cls
        return cls

    return wrap


def get_pool_source(name: str) -> type[PoolSource]:
    """The source class registered as ``name``; an unknown name raises with the valid names."""
    key = str(name).strip().lower()
    if key not in POOL_SOURCES:
        raise OmniferError(
            f"unknown pool source {name!r}; valid sources are {', '.join(POOL_SOURCES)}"
        )
    return POOL_SOURCES[key]


def detect_source(path: str | os.PathLike) -> str:
    """The name of the source that reads ``path``, by the first rule that matches."""
    root = _abspath(path)
    _check_exists(root)
    scan = _Scan(root)
    for name, cls in POOL_SOURCES.items():
        if cls.matches(root, scan):
            return name
    rules = "; ".join(f"{name}: {cls.rule}" for name, cls in POOL_SOURCES.items())
    raise OmniferError(
        f"{root} is not a face pool of a known form ({rules}); point to one of these, or force "
        "a source with source=NAME"
    )


def open_pool(path: str | os.PathLike, source: str | None = None, **options: Any) -> PoolSource:
    """Open a pool: ``source`` forces a source (else auto-detected); ``options`` go to it."""
    name = detect_source(path) if source is None else get_pool_source(source).name
    return POOL_SOURCES[name](path, **options)


# ====================================================================== base class

class PoolSource:
    """Base class: subclasses set ``rule`` and ``defaults`` and implement the hooks below."""

    name: ClassVar[str] = ""
    #: How auto-detection recognises this source (shown in errors and docs).
    rule: ClassVar[str] = ""
    #: Option names and their defaults; any other keyword is an error.
    defaults: ClassVar[dict[str, Any]] = {}
    #: Attributes rebuilt in each process (dropped when pickled).
    _transient: ClassVar[tuple[str, ...]] = ()

    def __init__(self, path: str | os.PathLike, **options: Any) -> None:
        self.path = _abspath(path)
        _check_exists(self.path)
        self.options = self._check_options(options)
        self._keys: list[str] | None = None
        self._handles: dict[str, BinaryIO] = {}
        self._pid = os.getpid()
        for attr in self._transient:
            setattr(self, attr, None)
        self._open()

    # ---- hooks
    @classmethod
    def matches(cls, path: Path, scan: _Scan) -> bool:
        """Whether auto-detection picks this source for ``path``."""
        return False

    def _open(self) -> None:
        """Check (cheaply) that the path is this kind of pool; raise ``OmniferError`` if not."""

    def _list(self) -> list[str]:
        """List the keys (and remember what ``read`` needs to find them)."""
        raise NotImplementedError

    def read(self, keys: Sequence[str]) -> Iterator[PoolItem]:
        """One :class:`PoolItem` per key, in the given order."""
        raise NotImplementedError

    # ---- shared
    def keys(self) -> list[str]:
        """Every item's key, in a stable order (listed once, then remembered)."""
        return list(self._listed())

    def describe(self) -> dict[str, Any]:
        """Name, path, options and item count, for a run manifest."""
        return {"name": self.name, "path": str(self.path), "options": dict(self.options),
                "count": len(self._listed())}

    def close(self) -> None:
        """Close the files this process opened (they reopen when needed)."""
        for fh in self._handles.values():
            fh.close()
        self._handles = {}

    def _listed(self) -> list[str]:
        if self._keys is None:
            self._keys = self._list()
        return self._keys

    def _check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        for key in options:
            if key not in self.defaults:
                valid = (f"valid options are {', '.join(self.defaults)}" if self.defaults
                         else "it takes no options")
                raise OmniferError(f"unknown option {key!r} for the {self.name} pool source; "
                                   f"{valid}")
        return {**self.defaults, **options}

    def _fresh(self) -> None:
        """Forget handles inherited through fork (their file offsets are shared)."""
        if self._pid != os.getpid():
            self._handles, self._pid = {}, os.getpid()
            for attr in self._transient:
                setattr(self, attr, None)

    def _file(self, path: Path) -> BinaryIO:
        """A binary handle on ``path``, opened once per process (a few are kept open)."""
        self._fresh()
        fh = self._handles.get(str(path))
        if fh is None:
            if len(self._handles) >= _MAX_OPEN_FILES:
                self._handles.pop(next(iter(self._handles))).close()
            fh = self._handles[str(path)] = open(path, "rb")
        return fh

    def __getstate__(self) -> dict[str, Any]:
        skip = {"_handles", *self._transient}
        return {k: v for k, v in self.__dict__.items() if k not in skip}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._handles, self._pid = {}, os.getpid()
        for attr in self._transient:
            setattr(self, attr, None)

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({str(self.path)!r}{opts})"


# ====================================================================== helpers

def _abspath(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise OmniferError(f"pool path {path} does not exist; check the path")


def _walk(root: Path) -> Iterator[str]:
    """Relative POSIX paths of the files below ``root``, hidden files and folders skipped."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        for f in sorted(filenames):
            if not f.startswith("."):
                yield prefix + f


def _suffix(name: str) -> str:
    return os.path.splitext(name)[1].lower()


class _Scan:
    """What detection needs to know about a path, computed once and only when asked."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._suffixes: set[str] | None = None

    @property
    def suffixes(self) -> set[str]:
        """Lower-case extensions of the file, or of every (non-hidden) file below the folder."""
        if self._suffixes is None:
            if self.path.is_dir():
                self._suffixes = {_suffix(f) for f in _walk(self.path)}
            else:
                self._suffixes = {_suffix(self.path.name)}
        return self._suffixes

    def has(self, extensions: Sequence[str]) -> bool:
        return not self.suffixes.isdisjoint(extensions)


def _files_of(path: Path, extensions: Sequence[str], source: str) -> dict[str, Path]:
    """``{file name: path}`` of a file, or of the matching files below a folder (sorted)."""
    if path.is_file():
        return {path.name: path}
    files = {f: path / f for f in _walk(path) if _suffix(f) in extensions}
    if not files:
        raise OmniferError(
            f"{path} holds no {'/'.join(extensions)} files, which the {source} source reads; "
            "point to such a file or folder, or pick another source"
        )
    return files


def _runs(keys: Sequence[str], locate: Callable[[str], Any],
          joins: Callable[[Any, Any], bool]) -> Iterator[tuple[list[str], list[Any] | str]]:
    """Cut ``keys`` into runs of consecutive keys whose locations ``joins`` accepts.

    Yields ``(keys, locations)``; a key that ``locate`` rejects (it returns the reason as a
    string) comes alone as ``([key], reason)``.
    """
    run_keys: list[str] = []
    run_locs: list[Any] = []
    for key in keys:
        loc = locate(key)
        if isinstance(loc, str) or (run_keys and not joins(run_locs[-1], loc)):
            if run_keys:
                yield run_keys, run_locs
            run_keys, run_locs = [], []
        if isinstance(loc, str):
            yield [key], loc
            continue
        run_keys.append(key)
        run_locs.append(loc)
    if run_keys:
        yield run_keys, run_locs


def _split_key(key: str, sep: str, files: dict[str, Any]) -> tuple[str, int] | str:
    """``(file name, number)`` of ``<file><sep><number>``, or why the key is not one."""
    name, _, number = str(key).rpartition(sep)
    if name not in files or not number.isdigit():
        return f"no item {key!r} in this pool (keys are <file>{sep}<number>)"
    return name, int(number)


def _unknown(key: str) -> str:
    return f"no item {key!r} in this pool"


# ====================================================================== recordio

def _rec_pair(path: Path) -> tuple[Path, Path] | list[Path] | None:
    """``(rec, idx)`` for a .rec/.idx path or a folder; the candidate list when ambiguous."""
    if path.is_file():
        if path.suffix.lower() not in (".rec", ".idx"):
            return None
        rec, idx = path.with_suffix(".rec"), path.with_suffix(".idx")
        return (rec, idx) if rec.is_file() and idx.is_file() else None
    if (path / "train.rec").is_file() and (path / "train.idx").is_file():
        return path / "train.rec", path / "train.idx"
    recs = sorted(p for p in path.glob("*.rec") if p.with_suffix(".idx").is_file())
    if len(recs) == 1:
        return recs[0], recs[0].with_suffix(".idx")
    return recs or None


@register_pool_source("recordio")
class RecordioSource(PoolSource):
    """MXNet/InsightFace RecordIO (MS1MV2/MS1MV3 ``faces_emore``); keys ``rec:<index>``."""

    rule = "a .rec file with its .idx beside it, or a folder holding train.rec and train.idx"

    @classmethod
    def matches(cls, path: Path, scan: _Scan) -> bool:
        return _rec_pair(path) is not None

    def _open(self) -> None:
        pair = _rec_pair(self.path)
        if isinstance(pair, list):
            raise OmniferError(
                f"{self.path} holds several RecordIO files ({', '.join(p.name for p in pair)}) "
                "and no train.rec; point to one .rec file"
            )
        if pair is None:
            raise OmniferError(
                f"{self.path} is not a RecordIO pool: the recordio source needs a .rec file with "
                "its .idx beside it (e.g. train.rec + train.idx), or a folder holding them"
            )
        self.rec, self.idx = pair
        self._index = np.zeros(0, dtype=np.int64)    # image record numbers, sorted
        self._offsets = np.zeros(0, dtype=np.int64)  # their byte offsets in the .rec

    def _list(self) -> list[str]:
        try:
            pairs = read_index(self.idx)
        except (ValueError, OSError) as exc:
            raise OmniferError(f"cannot read the RecordIO index {self.idx}: {one_line(exc)}; "
                               "rebuild the .idx from the .rec") from None
        table = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        index, offsets = table[:, 0], table[:, 1]
        if len(index) and index[0] == 0:
            count = self._meta_count(int(offsets[0]), len(index))
            if count is not None:
                keep = (index >= 1) & (index < count)
                index, offsets = index[keep], offsets[keep]
        self._index, self._offsets = index, offsets
        return [f"rec:{i}" for i in index.tolist()]

    def _meta_count(self, offset: int, records: int) -> int | None:
        """``labels[0]`` of record 0 when it is an InsightFace meta record, else ``None``."""
        try:
            flag, labels, image = unpack_payload(read_record(self._file(self.rec), offset))
        except (RecordError, OSError) as exc:
            raise OmniferError(f"cannot read record 0 of {self.rec} ({one_line(exc)}); the file "
                               "is damaged or not RecordIO") from None
        first = labels[0]
        if flag > 0 and not image and first == int(first) and 1 <= first <= records:
            return int(first)
        return None

    def read(self, keys: Sequence[str]) -> Iterator[PoolItem]:
        self._listed()
        for key in keys:
            prefix, _, number = str(key).partition(":")
            pos = -1
            if prefix == "rec" and number.isdigit():
                pos = int(np.searchsorted(self._index, int(number)))
                if pos >= len(self._index) or self._index[pos] != int(number):
                    pos = -1
            if pos < 0:
                yield PoolItem(key, None, f"{_unknown(key)} (no image record of {self.rec.name})")
                continue
            try:
                _, _, image = unpack_payload(read_record(self._file(self.rec),
                                                         int(self._offsets[pos])))
            except (RecordError, OSError) as exc:
                yield PoolItem(key, None, one_line(exc))
                continue
            if not image:
                yield PoolItem(key, None, f"record {number} holds no image bytes")
                continue
            yield PoolItem(key, image)


# ====================================================================== tsv (MS-Celeb-1M)

@register_pool_source("tsv")
class TsvSource(PoolSource):
    """Tab-separated lines with a base64 image column; keys ``<file>:<line number>`` (from 1)."""

    rule = "a .tsv file, or a folder of .tsv files"
    defaults = {"column": -1}

    @classmethod
    def matches(cls, path: Path, scan: _Scan) -> bool:
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
        self._files = _files_of(self.path, (".tsv",), "tsv")
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
            loc = _split_key(key, ":", self._lines)
            offset = -1
            if not isinstance(loc, str):
                numbers, offsets = self._lines[loc[0]]
                pos = int(np.searchsorted(numbers, loc[1]))
                if pos < len(numbers) and numbers[pos] == loc[1]:
                    offset = int(offsets[pos])
                else:
                    loc = _unknown(key)
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


# ====================================================================== parquet

def _usable_column(arrow_type: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return True
    return pa.types.is_struct(arrow_type) and arrow_type.get_field_index("bytes") >= 0


def _image_column(schema: Any, wanted: str | None, where: str) -> str:
    """The image column of an arrow schema: ``wanted``, else ``image``, else the only candidate."""
    names = list(schema.names)
    if wanted is not None:
        if wanted not in names:
            raise OmniferError(f"{where} has no column {wanted!r} (columns: {', '.join(names)}); "
                               "set column= to the image column")
        if not _usable_column(schema.field(wanted).type):
            raise OmniferError(f"{where} column {wanted!r} is {schema.field(wanted).type}, not "
                               "binary or a {bytes, path} struct; set column= to the image column")
        return wanted
    if "image" in names and _usable_column(schema.field("image").type):
        return "image"
    found = [f.name for f in schema if _usable_column(f.type)]
    if len(found) != 1:
        raise OmniferError(
            f"{where} has {len(found)} image-like columns ({', '.join(found) or 'none'} among "
            f"{', '.join(names)}); name the binary or {{bytes, path}} column with column=NAME"
        )
    return found[0]


def _value_bytes(value: Any, base: Path) -> bytes | str:
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
    def matches(cls, path: Path, scan: _Scan) -> bool:
        return scan.has((".parquet",))

    def _open(self) -> None:
        if self.options["column"] is not None and not isinstance(self.options["column"], str):
            raise OmniferError(f"column={self.options['column']!r} for the parquet source is not "
                               "a column name; give the image column's name")
        self._files = _files_of(self.path, (".parquet",), "parquet")
        self._groups: dict[str, tuple[str, list[int]]] = {}  # name -> column, row-group starts

    def _parquet(self, name: str) -> Any:
        import pyarrow.parquet as pq

        self._fresh()
        if self._pq is None:
            self._pq = {}
        if name not in self._pq:
            if len(self._pq) >= _MAX_OPEN_FILES:
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
            column = _image_column(schema, self.options["column"], str(path))
            starts = [0]
            for g in range(meta.num_row_groups):
                starts.append(starts[-1] + meta.row_group(g).num_rows)
            self._groups[name] = (column, starts)
            keys += [f"{name}:{row}" for row in range(starts[-1])]
        return keys

    def _locate(self, key: str) -> tuple[str, int, int] | str:
        loc = _split_key(key, ":", self._groups)
        if isinstance(loc, str):
            return loc
        name, row = loc
        starts = self._groups[name][1]
        if row >= starts[-1]:
            return _unknown(key)
        group = bisect.bisect_right(starts, row) - 1
        return name, group, row - starts[group]

    def read(self, keys: Sequence[str]) -> Iterator[PoolItem]:
        self._listed()
        same_group = lambda a, b: a[:2] == b[:2]  # noqa: E731
        for run_keys, locs in _runs(keys, self._locate, same_group):
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
                data = (_value_bytes(cells[loc[2]], base) if loc[2] in cells
                        else f"row {loc[2]} is missing from row group {group} of {name}")
                yield PoolItem(key, None, data) if isinstance(data, str) else PoolItem(key, data)

    def _read_rows(self, name: str, group: int, rows: list[int]) -> dict[int, Any]:
        """The image cells of ``rows`` (sorted) of one row group, streamed in batches."""
        column = self._groups[name][0]
        cells: dict[int, Any] = {}
        start = 0
        want = 0
        batches = self._parquet(name).iter_batches(batch_size=_BATCH, row_groups=[group],
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


# ====================================================================== hf (save_to_disk)

@register_pool_source("hf")
class HfSource(PoolSource):
    """A ``datasets.Dataset.save_to_disk`` folder, image column undecoded; keys ``hf:<row>``."""

    rule = "a folder written by datasets' save_to_disk (state.json / dataset_info.json)"
    defaults = {"column": None}
    _transient = ("_ds",)

    @classmethod
    def matches(cls, path: Path, scan: _Scan) -> bool:
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
            return _unknown(key)
        return int(row)

    def read(self, keys: Sequence[str]) -> Iterator[PoolItem]:
        self._listed()
        ds = self._dataset()
        keys = list(keys)
        for lo in range(0, len(keys), _BATCH):
            batch = keys[lo:lo + _BATCH]
            locs = [self._locate(k) for k in batch]
            rows = [loc for loc in locs if not isinstance(loc, str)]
            try:
                cells = iter(ds[rows].column(self._column).to_pylist() if rows else [])
            except Exception as exc:  # a damaged arrow file
                reason = f"cannot read rows of {self.path} ({one_line(exc)})"
                yield from (PoolItem(k, None, reason) for k in batch)
                continue
            for key, loc in zip(batch, locs):
                data = loc if isinstance(loc, str) else _value_bytes(next(cells), self.path)
                yield PoolItem(key, None, data) if isinstance(data, str) else PoolItem(key, data)


# ====================================================================== webdataset

def _sample_key(member: str) -> tuple[str, str]:
    """WebDataset split of a member name: ``dir/abc.seg.png`` -> ``("dir/abc", "seg.png")``."""
    folder, _, base = member.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _image_member(members: list[tuple[str, int, int]]) -> tuple[str, int, int] | None:
    """The member holding the image: one whose extension is an image type (plain ``jpg`` first)."""
    exts = [_sample_key(m[0])[1] for m in members]
    for plain in (True, False):
        for member, ext in zip(members, exts):
            last = "." + ext.rpartition(".")[2]
            if last in IMAGE_EXTENSIONS and (not plain or "." not in ext):
                return member
    return None


@register_pool_source("webdataset")
class WebdatasetSource(PoolSource):
    """WebDataset tar shards; keys ``<tar>:<image member>``, read by member offset."""

    rule = "a .tar file, or a folder of .tar shards"

    @classmethod
    def matches(cls, path: Path, scan: _Scan) -> bool:
        return scan.has((".tar",))

    def _open(self) -> None:
        self._files = _files_of(self.path, (".tar",), "webdataset")
        self._where: dict[str, tuple[str, int, int] | str] = {}  # key -> tar, offset, size | why

    def _list(self) -> list[str]:
        for name, path in self._files.items():
            samples: dict[str, list[tuple[str, int, int]]] = {}
            try:
                with tarfile.open(path, mode="r:") as tar:
                    while True:
                        try:
                            info = tar.next()
                        except tarfile.ReadError as exc:
                            log.warning("%s: tar ends early after %d samples (%s)", path,
                                        len(samples), one_line(exc))
                            break
                        if info is None:
                            break
                        if info.isfile() and not info.name.rpartition("/")[2].startswith("."):
                            samples.setdefault(_sample_key(info.name)[0], []).append(
                                (info.name, info.offset_data, info.size))
            except (tarfile.TarError, OSError) as exc:
                raise OmniferError(f"cannot read {path} as an uncompressed tar ({one_line(exc)}); "
                                   "check the shard or remove it from the pool") from None
            for sample, members in samples.items():
                image = _image_member(members)
                if image is None:
                    names = ", ".join(m[0] for m in members)
                    self._where[f"{name}:{sample}"] = (f"sample {sample} of {name} has no image "
                                                       f"member (members: {names})")
                else:
                    self._where[f"{name}:{image[0]}"] = (name, image[1], image[2])
        return list(self._where)

    def read(self, keys: Sequence[str]) -> Iterator[PoolItem]:
        self._listed()
        for key in keys:
            where = self._where.get(key, _unknown(key))
            if isinstance(where, str):
                yield PoolItem(key, None, where)
                continue
            name, offset, size = where
            try:
                fh = self._file(self._files[name])
                fh.seek(offset)
                data = fh.read(size)
            except OSError as exc:
                yield PoolItem(key, None, f"cannot read {key} ({one_line(exc)})")
                continue
            if len(data) < size:
                yield PoolItem(key, None, f"tar member {key} is truncated ({len(data)} of {size} "
                                          "bytes)")
                continue
            yield PoolItem(key, data)


# ====================================================================== video

def _import_av() -> Any:
    try:
        import av
    except ImportError:
        raise OmniferError("reading video needs PyAV, which is not installed; install the video "
                           "extra: pip install 'omnifer[video]'") from None
    return av


def _video_duration(path: Path) -> float:
    """Seconds from the first frame to the end of the first video stream."""
    av = _import_av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise OmniferError(f"{path} has no video stream; remove it from the pool")
            stream = container.streams.video[0]
            if stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
            if container.duration:
                return container.duration / av.time_base
            start, last = None, 0.0
            for frame in container.decode(stream):
                if frame.time is not None:
                    start = frame.time if start is None else start
                    last = frame.time - start
            rate = float(stream.average_rate or 25)
            return last + 1.0 / rate if start is not None else 0.0
    except OmniferError:
        raise
    except Exception as exc:  # av.error.FFmpegError and friends
        raise OmniferError(f"cannot open video {path} ({one_line(exc)}); check the file or "
                           "remove it from the pool") from None


@register_pool_source("video")
class VideoSource(PoolSource):
    """Frames of videos sampled at ``fps``; keys ``<file>@<milliseconds>``, RGB uint8 arrays."""

    rule = f"a video file ({' '.join(VIDEO_EXTENSIONS)}), or a folder of them"
    defaults = {"fps": 1.0}

    @classmethod
    def matches(cls, path: Path, scan: _Scan) -> bool:
        return scan.has(VIDEO_EXTENSIONS)

    def _open(self) -> None:
        fps = self.options["fps"]
        try:
            ok = not isinstance(fps, bool) and 0 < float(fps) <= 1000
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise OmniferError(f"fps={fps!r} for the video source is not a frame rate; give a "
                               "number of frames per second between 0 and 1000, e.g. fps=1")
        self.options["fps"] = float(fps)
        self._files = _files_of(self.path, VIDEO_EXTENSIONS, "video")
        _import_av()

    def _list(self) -> list[str]:
        fps = self.options["fps"]
        keys: list[str] = []
        for name, path in self._files.items():
            count = max(1, math.ceil(_video_duration(path) * fps - 1e-6))
            keys += [f"{name}@{round(k * 1000 / fps)}" for k in range(count)]
        return keys

    def read(self, keys: Sequence[str]) -> Iterator[PoolItem]:
        def joins(a: tuple[str, int], b: tuple[str, int]) -> bool:
            return a[0] == b[0] and 0 <= b[1] - a[1] <= _VIDEO_SEEK_GAP_MS

        for run_keys, locs in _runs(keys, lambda k: _split_key(k, "@", self._files), joins):
            if isinstance(locs, str):
                yield PoolItem(run_keys[0], None, locs)
            else:
                yield from self._decode_run(locs[0][0], run_keys, [loc[1] for loc in locs])

    def _decode_run(self, name: str, keys: list[str], times_ms: list[int]) -> Iterator[PoolItem]:
        """Seek before the first time, decode forward, hand out the frame shown at each time."""
        av = _import_av()
        done = 0
        try:
            with av.open(str(self._files[name])) as container:
                stream = container.streams.video[0]
                base = stream.time_base
                start = float(stream.start_time * base) if stream.start_time is not None else 0.0
                container.seek(int((start + times_ms[0] / 1000) / base), stream=stream,
                               backward=True)
                shown = None
                for frame in container.decode(stream):
                    t = (frame.time - start) * 1000 if frame.time is not None else math.inf
                    while done < len(keys) and t > times_ms[done] + 0.5:
                        pick = frame if shown is None else shown
                        yield PoolItem(keys[done], pick.to_ndarray(format="rgb24"))
                        done += 1
                    if done == len(keys):
                        return
                    shown = frame
                if shown is None:
                    raise OmniferError("no frame decoded after seeking")
                for key in keys[done:]:
                    yield PoolItem(key, shown.to_ndarray(format="rgb24"))
                    done += 1
        except Exception as exc:  # av.error.FFmpegError and friends: a damaged stream
            reason = f"cannot decode {name} at {times_ms[done]} ms ({one_line(exc)})"
            yield from (PoolItem(k, None, reason) for k in keys[done:])


# ====================================================================== folder

@register_pool_source("folder")
class FolderSource(PoolSource):
    """A folder tree of image files; keys are relative POSIX paths, sorted."""

    rule = f"a folder of images ({' '.join(IMAGE_EXTENSIONS)}, any case, in subfolders too)"

    @classmethod
    def matches(cls, path: Path, scan: _Scan) -> bool:
        return path.is_dir() and scan.has(IMAGE_EXTENSIONS)

    def _open(self) -> None:
        if not self.path.is_dir():
            raise OmniferError(f"{self.path} is not a folder; the folder source reads a folder "
                               "tree of images")

    def _list(self) -> list[str]:
        return sorted(f for f in _walk(self.path) if _suffix(f) in IMAGE_EXTENSIONS)

    def read(self, keys: Sequence[str]) -> Iterator[PoolItem]:
        for key in keys:
            path = self.path.joinpath(*str(key).split("/"))
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
            except FileNotFoundError:
                yield PoolItem(key, None, f"image file not found: {path}")
                continue
            except OSError as exc:
                yield PoolItem(key, None, f"cannot read {path} ({one_line(exc)})")
                continue
            yield PoolItem(key, data) if data else PoolItem(key, None, f"{path} is empty")
