"""Resumable evidence passes: each span of pool rows is written to a folder once scored.

A pass over millions of pool rows takes minutes to hours; with a checkpoint folder, each span's
kept rows and their evidence are saved (``span-<start>.npz``, atomically) as soon as the span is
scored, and a pass started again with the same arguments loads the finished spans instead of
scoring them again. ``pass.json`` holds the fingerprint of the arguments: spans written under
other arguments are deleted, never mixed in.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from omnifer.artifacts import atomic_path, atomic_write_json, fingerprint, read_json

FIELDS = ("rows", "scores", "votes", "neighbours", "neighbour_scores")
MARKER = "pass.json"


class SpanStore:
    """The finished spans of one evidence pass in ``folder`` (created on first use)."""

    def __init__(self, folder: str | os.PathLike, arguments: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.key = fingerprint(arguments)
        marker = self.folder / MARKER
        if marker.is_file() and read_json(marker).get("key") == self.key:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("span-*.npz"):  # another pass's spans
            old.unlink()
        atomic_write_json(marker, {"key": self.key, "arguments": arguments})

    def path(self, start: int) -> Path:
        return self.folder / f"span-{start:012d}.npz"

    def load(self, start: int) -> tuple[np.ndarray, ...] | None:
        """The span's arrays (in ``FIELDS`` order), or None when it is not finished."""
        path = self.path(start)
        if not path.is_file():
            return None
        with np.load(path) as data:
            return tuple(data[f] for f in FIELDS)

    def save(self, start: int, arrays: tuple[np.ndarray, ...]) -> None:
        with atomic_path(self.path(start)) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **dict(zip(FIELDS, arrays)))

    def done(self) -> int:
        """How many spans are finished."""
        return len(list(self.folder.glob("span-*.npz")))
