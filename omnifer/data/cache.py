"""Decoded images for training: a uint8 memory map per (samples, size).

Decoding JPEGs every epoch would cost more than a small model's step on a CPU, so the images
of a labeled set are decoded once into ``<cache>/<key>.npy`` ([N, S, S, 3] uint8, memory
mapped, shared by every run over the same samples; written with ordinary writes, so a full disk
is a one-line error); :mod:`omnifer.data.batches` cuts batches
from it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from omnifer.artifacts import atomic_write_npy
from omnifer.data.images import decode_image
from omnifer.data.table import LabeledSet
from omnifer.errors import OmniferError

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def cache_key(labeled: LabeledSet, size: int) -> str:
    """The cache file's name for the images of ``labeled`` at ``size``."""
    h = hashlib.blake2b(digest_size=12)
    h.update(f"{size}\n".encode())
    for sid, ref in zip(labeled.table["sample_id"], labeled.table["image"]):
        h.update(f"{sid}\t{ref}\n".encode())
    return h.hexdigest()


def decode_one(ref: str, size: int) -> np.ndarray:
    """The image ``ref`` as uint8 [size, size, 3]; a bad image is a one-line training error."""
    try:
        return decode_image(ref, size)
    except OmniferError as exc:
        raise OmniferError(f"training {exc}") from None


def decoded_images(labeled: LabeledSet, size: int, cache_dir: str | os.PathLike, *,
                   progress: Progress | None = None, workers: int | None = None,
                   chunk: int = 512) -> np.ndarray:
    """The images of ``labeled`` as a read-only [N, size, size, 3] uint8 memory map."""
    path = Path(cache_dir) / f"{cache_key(labeled, size)}.npy"
    n = len(labeled)
    if path.is_file():
        arr = np.load(path, mmap_mode="r")
        if arr.shape == (n, size, size, 3):
            return arr
        log.warning("image cache %s has shape %s; rebuilding", path, arr.shape)
    refs = labeled.table["image"].tolist()
    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:

        def parts() -> Iterator[np.ndarray]:
            for start in range(0, n, chunk):
                part = refs[start:start + chunk]
                yield np.stack(list(pool.map(lambda r: decode_one(r, size), part)))
                if progress:
                    progress(start + len(part), n)

        atomic_write_npy(path, parts(), shape=(n, size, size, 3), dtype=np.uint8)
    return np.load(path, mmap_mode="r")
