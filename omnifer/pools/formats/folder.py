"""The ``folder`` pool source: a folder tree of image files."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from omnifer.errors import OmniferError, one_line
from omnifer.pools.source import (
    IMAGE_EXTENSIONS,
    PoolItem,
    PoolSource,
    Scan,
    register_pool_source,
    suffix,
    walk,
)


@register_pool_source("folder")
class FolderSource(PoolSource):
    """A folder tree of image files; keys are relative POSIX paths, sorted."""

    rule = f"a folder of images ({' '.join(IMAGE_EXTENSIONS)}, any case, in subfolders too)"

    @classmethod
    def matches(cls, path: Path, scan: Scan) -> bool:
        return path.is_dir() and scan.has(IMAGE_EXTENSIONS)

    def _open(self) -> None:
        if not self.path.is_dir():
            raise OmniferError(f"{self.path} is not a folder; the folder source reads a folder "
                               "tree of images")

    def _list(self) -> list[str]:
        skipped: list[tuple[str, str]] = []
        keys = sorted(f for f in walk(self.path, skipped) if suffix(f) in IMAGE_EXTENSIONS)
        self._unlisted = [PoolItem(name, None, reason) for name, reason in skipped
                          if name.endswith("/") or suffix(name) in IMAGE_EXTENSIONS]
        return keys

    def read(self, keys: Sequence[str]) -> Iterator[PoolItem]:
        for key in keys:
            path = self.path.joinpath(*str(key).split("/"))
            try:
                data = read_regular_file(path)
            except FileNotFoundError:
                yield PoolItem(key, None, f"image file not found: {path}")
                continue
            except OSError as exc:
                yield PoolItem(key, None, f"cannot read {path} ({one_line(exc)})")
                continue
            if data is None:
                yield PoolItem(key, None, f"{path} is not a regular file")
            else:
                yield PoolItem(key, data) if data else PoolItem(key, None, f"{path} is empty")


def read_regular_file(path: Path) -> bytes | None:
    """The bytes of ``path``, or None when it is not a regular file (a FIFO is never waited on)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with open(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return fh.read()
