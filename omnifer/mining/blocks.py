"""Blocked scoring: pool rows a block at a time against the labeled columns, on numpy or
torch, with memory-mapped pages released as the pass goes (never N x M in memory)."""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from omnifer.errors import OmniferError

Progress = Callable[[int, int], None]

BLOCK_BYTES = 64 << 20  #: float32 scores per block
MIN_BLOCK = 256


def blocks(x: np.ndarray, rows: np.ndarray | None, block: int,
           progress: Progress | None, span: tuple[int, int] | None = None
           ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(pool row ids, rows of x) ``block`` rows at a time; ``span`` (first, end) limits the
    pass to those positions of the rows (of ``rows``, or of ``x`` when ``rows`` is None)."""
    total = len(x) if rows is None else len(rows)
    first, end = span if span is not None else (0, total)
    for start in range(first, end, block):
        stop = min(start + block, end)
        if rows is None:
            ids = np.arange(start, stop, dtype=np.int64)
            yield ids, x[start:stop]
        else:
            ids = rows[start:stop]
            yield ids, x[ids]
        if len(ids):
            release_pages(x, int(ids[0]), int(ids[-1]) + 1)
        if progress is not None:
            progress(stop, total)


def release_pages(x: np.ndarray, start: int, stop: int) -> None:
    """Drop rows start..stop of a memory-mapped ``x`` from this process's resident memory (the
    page cache keeps them), so that a pass over a large file does not grow RSS."""
    mm = getattr(x, "_mmap", None)
    if mm is None or getattr(x, "mode", "c") == "c" or not x.flags.c_contiguous:
        return  # not a shared file mapping: its pages hold the only copy
    try:
        base = np.frombuffer(mm, dtype=np.uint8, count=1).ctypes.data
        row = x.strides[0]
        lo = x.ctypes.data - base + start * row
        hi = x.ctypes.data - base + stop * row
        lo -= lo % mmap.PAGESIZE
        mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
    except (AttributeError, OSError, ValueError):  # no madvise here: only memory use suffers
        pass


def block_size(block: int | None, columns: int) -> int:
    if block is None:
        return max(MIN_BLOCK, BLOCK_BYTES // (4 * columns))
    if int(block) < 1:
        raise OmniferError(f"block is {block}; it must be at least 1")
    return int(block)


def make_scorer(columns: np.ndarray, device: str) -> Any:
    """Scores blocks against ``columns``: ``rowmax(x, cols)`` computes a block's score matrix
    and returns each row's max over the columns ``cols``; ``take(keep)`` returns kept rows."""
    text = str(device).strip().lower()
    if text == "cpu":
        return NumpyScorer(columns)
    from omnifer.device import resolve_device  # imports torch

    dev = resolve_device(text)
    return NumpyScorer(columns) if dev.type == "cpu" else TorchScorer(columns, dev)


class NumpyScorer:
    """float32 numpy matmul into buffers reused across blocks."""

    def __init__(self, columns: np.ndarray) -> None:
        self.t = columns.T
        self.x = self.buf = self.s = np.empty((0, 0), dtype=np.float32)

    def rowmax(self, x: np.ndarray, cols: slice) -> np.ndarray:
        if len(self.x) < len(x):  # the first block is the largest
            self.x = np.empty((len(x), self.t.shape[0]), dtype=np.float32)
            self.buf = np.empty((len(x), self.t.shape[1]), dtype=np.float32)
        xb = self.x[:len(x)]
        xb[...] = x
        self.s = np.matmul(xb, self.t, out=self.buf[:len(x)])
        return self.s[:, cols].max(axis=1)

    def take(self, keep: np.ndarray) -> np.ndarray:
        return self.s[keep]


class TorchScorer:
    """float32 torch matmul on ``device``; row maxima and kept rows come back to the host."""

    def __init__(self, columns: np.ndarray, device: Any) -> None:
        import torch

        self.torch, self.device = torch, device
        self.t = torch.from_numpy(np.ascontiguousarray(columns)).to(device).T

    def rowmax(self, x: np.ndarray, cols: slice) -> np.ndarray:
        torch = self.torch
        tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False  # full float32, as on the CPU
        try:
            self.s = torch.from_numpy(np.ascontiguousarray(x)).to(self.device).float() @ self.t
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
        return self.s[:, cols].amax(dim=1).cpu().numpy()

    def take(self, keep: np.ndarray) -> np.ndarray:
        return self.s[self.torch.from_numpy(keep).to(self.device)].cpu().numpy()
