"""The ``folder`` pool source: a folder tree of image files."""

from __future__ import annotations

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
        return sorted(f for f in walk(self.path) if suffix(f) in IMAGE_EXTENSIONS)

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
