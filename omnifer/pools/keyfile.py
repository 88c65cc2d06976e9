"""Pool keys on disk, read back by range: :class:`KeyFile`.

An embedding run writes the keys it still has to embed to a key file in its run folder, once,
where it lists the pool; every engine then reads the keys of one shard or block by position.
So the process that coordinates the run never holds the pool's listing, which for a pool of
millions of faces is hundreds of MB of Python strings.

The file is two files in one folder: ``keys.bin``, the UTF-8 bytes of the keys one after the
other, and ``offsets.npy``, their ``n + 1`` start offsets (``int64``), written last, so a
folder with ``offsets.npy`` in place is complete.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from omnifer.artifacts import atomic_path, atomic_write_npy

BYTES = "keys.bin"
OFFSETS = "offsets.npy"


class KeyFile:
    """The keys in ``folder`` (see the module): ``len`` and :meth:`slice` read only the
    offsets and bytes asked for. Picklable: it travels as its path."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self._offsets: np.ndarray | None = None

    @classmethod
    def write(cls, folder: str | os.PathLike, keys: Iterable[str]) -> KeyFile:
        """Write ``keys`` (replacing what ``folder`` held) and return their file."""
        folder = Path(folder)
        offsets = array("q", [0])  # 8 bytes per key, not a Python int each
        with atomic_path(folder / BYTES) as tmp:
            with open(tmp, "wb") as fh:
                for key in keys:
                    data = str(key).encode("utf-8", "surrogateescape")
                    fh.write(data)
                    offsets.append(offsets[-1] + len(data))
        ends = np.frombuffer(offsets, np.int64)
        atomic_write_npy(folder / OFFSETS, [ends], shape=ends.shape, dtype=ends.dtype)
        return cls(folder)

    def remove(self) -> None:
        """Delete the key file (and its folder, when that is left empty)."""
        for name in (OFFSETS, BYTES):
            (self.folder / name).unlink(missing_ok=True)
        self._offsets = None
        try:
            self.folder.rmdir()
        except OSError:  # gone already, or holds other files
            pass

    def __len__(self) -> int:
        return len(self._read_offsets()) - 1

    def slice(self, start: int, stop: int) -> list[str]:
        """The keys at positions ``start`` to ``stop`` (exclusive), in order."""
        offsets = self._read_offsets()
        start, stop = max(int(start), 0), min(int(stop), len(offsets) - 1)
        if start >= stop:
            return []
        edges = np.asarray(offsets[start:stop + 1]) - offsets[start]
        with open(self.folder / BYTES, "rb") as fh:
            fh.seek(int(offsets[start]))
            data = fh.read(int(edges[-1]))
        return [data[a:b].decode("utf-8", "surrogateescape")
                for a, b in zip(edges[:-1].tolist(), edges[1:].tolist())]

    def _read_offsets(self) -> np.ndarray:
        if self._offsets is None:
            self._offsets = np.load(self.folder / OFFSETS, mmap_mode="r")
        return self._offsets

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.folder, self._offsets = state["folder"], None

    def __repr__(self) -> str:
        return f"KeyFile({str(self.folder)!r})"
