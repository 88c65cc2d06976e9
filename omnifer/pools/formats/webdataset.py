"""The ``webdataset`` pool source: WebDataset tar shards, read by member offset."""

from __future__ import annotations

import logging
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from omnifer.errors import OmniferError, one_line
from omnifer.pools.source import (
    IMAGE_EXTENSIONS,
    PoolItem,
    PoolSource,
    Scan,
    files_of,
    no_item,
    register_pool_source,
)

log = logging.getLogger(__name__)


def sample_key(member: str) -> tuple[str, str]:
    """WebDataset split of a member name: ``dir/abc.seg.png`` -> ``("dir/abc", "seg.png")``."""
    folder, _, base = member.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def image_member(members: list[tuple[str, int, int]]) -> tuple[str, int, int] | None:
    """The member holding the image: one whose extension is an image type (plain ``jpg`` first)."""
    exts = [sample_key(m[0])[1] for m in members]
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
    def matches(cls, path: Path, scan: Scan) -> bool:
        return scan.has((".tar",))

    def _open(self) -> None:
        self._files = files_of(self.path, (".tar",), "webdataset")
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
                            samples.setdefault(sample_key(info.name)[0], []).append(
                                (info.name, info.offset_data, info.size))
            except (tarfile.TarError, OSError) as exc:
                raise OmniferError(f"cannot read {path} as an uncompressed tar ({one_line(exc)}); "
                                   "check the shard or remove it from the pool") from None
            for sample, members in samples.items():
                image = image_member(members)
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
            where = self._where.get(key, no_item(key))
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
