"""Pool sources: one interface over every form an unlabeled face pool comes in.

A source lists stable keys cheaply (:meth:`PoolSource.keys`) and reads items by key
(:meth:`PoolSource.read`), so an embedding engine can cut the key list into fixed shards,
resume after a crash, embed only keys added later, and read shards in worker processes.
Sources hand out encoded image bytes (video: decoded RGB frames); decoding happens later.
A problem with one item becomes a :class:`PoolItem` with ``error`` set; a source that cannot
be opened at all raises a one-line :class:`~omnifer.errors.OmniferError`.

Sources are picklable: file handles open lazily in each process, and listings travel with
the pickle so that workers do not list the pool again. One source object serves one thread.

Each format (``omnifer.pools.formats``, one module per format) registers its class in
:data:`POOL_SOURCES`. Auto-detection tries the sources in :data:`DETECTION_ORDER`, most
specific rule first, then any source registered elsewhere, in registration order.
:func:`open_pool` is the entry point.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np

from omnifer.errors import OmniferError
from omnifer.registry import Registry

#: Image file extensions (compared lower-case), as for labeled folders.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
#: Video file extensions the ``video`` source reads (compared lower-case).
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".mov", ".webm")
#: The order in which auto-detection tries the built-in sources: the first match wins, so
#: container files (RecordIO, TSV, Parquet, saved datasets, tar shards, videos) come before a
#: plain folder of images.
DETECTION_ORDER: tuple[str, ...] = ("recordio", "tsv", "parquet", "hf", "webdataset", "video",
                                    "folder")
#: Files a source keeps open per process.
MAX_OPEN_FILES = 16
#: Rows a columnar source reads per batch.
BATCH = 256


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


# ====================================================================== registry and detection

#: Every pool source class by name (filled by ``omnifer.pools.formats``).
POOL_SOURCES: Registry[type[PoolSource]] = Registry("pool source",
                                                     fix="pass --source NAME")


def register_pool_source(name: str) -> Callable[[type[PoolSource]], type[PoolSource]]:
    """Class decorator: register a source under ``name``."""

    def wrap(cls: type[PoolSource]) -> type[PoolSource]:
        cls.name = name
        POOL_SOURCES.register(name, cls)
        return cls

    return wrap


def get_pool_source(name: str) -> type[PoolSource]:
    """The source class registered as ``name`` (any case); an unknown name raises with the
    valid names."""
    return POOL_SOURCES.get(str(name).strip().lower())


def detection_order() -> list[str]:
    """Names in the order detection tries them: :data:`DETECTION_ORDER`, then the rest."""
    order = [name for name in DETECTION_ORDER if name in POOL_SOURCES]
    return order + [name for name in POOL_SOURCES if name not in order]


def detect_source(path: str | os.PathLike) -> str:
    """The name of the source that reads ``path``, by the first rule that matches."""
    root = absolute(path)
    check_exists(root)
    scan = Scan(root)
    order = detection_order()
    for name in order:
        if POOL_SOURCES.get(name).matches(root, scan):
            return name
    rules = "; ".join(f"{name}: {POOL_SOURCES.get(name).rule}" for name in order)
    raise OmniferError(
        f"{root} is not a face pool of a known form ({rules}); point to one of these, or force "
        "a source with source=NAME"
    )


def open_pool(path: str | os.PathLike, source: str | None = None, **options: Any) -> PoolSource:
    """Open a pool: ``source`` forces a source (else auto-detected); ``options`` go to it."""
    cls = get_pool_source(detect_source(path) if source is None else source)
    return cls(path, **options)


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
        self.path = absolute(path)
        check_exists(self.path)
        self.options = self._check_options(options)
        self._keys: list[str] | None = None
        self._unlisted: list[PoolItem] = []
        self._handles: dict[str, BinaryIO] = {}
        self._pid = os.getpid()
        for attr in self._transient:
            setattr(self, attr, None)
        self._open()

    # ---- hooks
    @classmethod
    def matches(cls, path: Path, scan: Scan) -> bool:
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

    def unlisted(self) -> list[PoolItem]:
        """Entries of the pool that could not become keys (an unreadable folder, a name that is
        not UTF-8, a broken symlink, a FIFO ...), each with ``error`` set; found by listing."""
        self._listed()
        return list(self._unlisted)

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
            if len(self._handles) >= MAX_OPEN_FILES:
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


# ====================================================================== helpers for sources

def absolute(path: str | os.PathLike) -> Path:
    """``path`` with ``~`` expanded, made absolute (symlinks kept)."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def check_exists(path: Path) -> None:
    if not path.exists():
        raise OmniferError(f"pool path {path} does not exist; check the path")


def walk(root: Path, skipped: list[tuple[str, str]] | None = None) -> Iterator[str]:
    """Relative POSIX paths of the regular files below ``root``, hidden files and folders
    skipped; what cannot be read as a file goes to ``skipped`` (see ``walk_files``)."""
    from omnifer.artifacts import walk_files

    return walk_files(root, skipped=skipped)


def suffix(name: str) -> str:
    """The lower-case extension of a file name."""
    return os.path.splitext(name)[1].lower()


class Scan:
    """What detection needs to know about a path, computed once and only when asked."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._suffixes: set[str] | None = None

    @property
    def suffixes(self) -> set[str]:
        """Lower-case extensions of the file, or of every (non-hidden) file below the folder."""
        if self._suffixes is None:
            if self.path.is_dir():
                self._suffixes = {suffix(f) for f in walk(self.path)}
            else:
                self._suffixes = {suffix(self.path.name)}
        return self._suffixes

    def has(self, extensions: Sequence[str]) -> bool:
        return not self.suffixes.isdisjoint(extensions)


def files_of(path: Path, extensions: Sequence[str], source: str) -> dict[str, Path]:
    """``{file name: path}`` of a file, or of the matching files below a folder (sorted)."""
    if path.is_file():
        return {path.name: path}
    files = {f: path / f for f in walk(path) if suffix(f) in extensions}
    if not files:
        raise OmniferError(
            f"{path} holds no {'/'.join(extensions)} files, which the {source} source reads; "
            "point to such a file or folder, or pick another source"
        )
    return files


def runs(keys: Sequence[str], locate: Callable[[str], Any],
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


def split_key(key: str, sep: str, files: dict[str, Any]) -> tuple[str, int] | str:
    """``(file name, number)`` of ``<file><sep><number>``, or why the key is not one."""
    name, _, number = str(key).rpartition(sep)
    if name not in files or not number.isdigit():
        return f"no item {key!r} in this pool (keys are <file>{sep}<number>)"
    return name, int(number)


def no_item(key: str) -> str:
    """The reason given for a key the pool does not have."""
    return f"no item {key!r} in this pool"
