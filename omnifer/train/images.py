"""Decoded images for training: a uint8 memory map per (samples, size), and batch tensors.

Decoding JPEGs every epoch would cost more than a small model's step on a CPU, so the images
of a labeled set are decoded once into ``<cache>/<key>.npy`` ([N, S, S, 3] uint8, memory
mapped, shared by every run over the same samples) and batches are cut from it. Augmentation
(flip, shift, brightness/contrast) runs on the batch tensor, driven by an explicit generator.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from omnifer.artifacts import atomic_path
from omnifer.data.images import decode_image
from omnifer.data.table import LabeledSet
from omnifer.errors import OmniferError, one_line

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def cache_key(labeled: LabeledSet, size: int) -> str:
    h = hashlib.blake2b(digest_size=12)
    h.update(f"{size}\n".encode())
    for sid, ref in zip(labeled.table["sample_id"], labeled.table["image"]):
        h.update(f"{sid}\t{ref}\n".encode())
    return h.hexdigest()


def decode_one(ref: str, size: int) -> np.ndarray:
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
    with atomic_path(path) as tmp, ThreadPoolExecutor(workers) as pool:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                        shape=(n, size, size, 3))
        for start in range(0, n, chunk):
            part = refs[start:start + chunk]
            out[start:start + len(part)] = list(pool.map(lambda r: decode_one(r, size), part))
            if progress:
                progress(start + len(part), n)
        out.flush()
        del out
    return np.load(path, mmap_mode="r")


class BatchMaker:
    """Turns rows of the uint8 image array into normalised float batches on ``device``."""

    def __init__(self, images: np.ndarray, *, mean: Sequence[float], std: Sequence[float],
                 device: torch.device) -> None:
        self.images = images
        self.device = device
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    def __call__(self, rows: np.ndarray, *, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        """Rows -> [B, 3, S, S] float (channels-last memory), augmented when ``generator``."""
        order = np.argsort(rows, kind="stable")  # sequential reads from the memory map
        data = np.empty((len(rows),) + self.images.shape[1:], dtype=np.uint8)
        data[order] = self.images[rows[order]]
        x = torch.from_numpy(data).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        if generator is not None:
            x = augment(x, generator)
        return (x - self.mean) / self.std


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip, shift by up to 1/16 of the size, brightness and contrast."""
    b, _, s, _ = x.shape
    g = generator
    flip = torch.rand(b, generator=g) < 0.5
    x = torch.where(flip.to(x.device).view(b, 1, 1, 1), x.flip(3), x)
    pad = max(1, s // 16)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b), generator=g).tolist()
    x = torch.stack([padded[i, :, dy[i]:dy[i] + s, dx[i]:dx[i] + s] for i in range(b)])
    gain = (0.8 + 0.4 * torch.rand(b, 2, generator=g)).to(x.device)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * gain[:, 0].view(b, 1, 1, 1) + mean * gain[:, 1].view(b, 1, 1, 1)
    return x.clamp_(0.0, 1.0).contiguous(memory_format=torch.channels_last)
