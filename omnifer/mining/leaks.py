"""Perceptual hashes for the leak guard: edited copies of evaluation images (brightened,
recompressed, resized, mirrored) whose embedding the cosine test alone lets through.

The hash is a DCT pHash of ``BITS`` x ``BITS`` bits: the image in grayscale (ITU-R 601 luma) is
box-resized to ``SIDE`` x ``SIDE``, its 2-D DCT taken, and each of the ``BITS`` x ``BITS``
lowest-frequency coefficients gives one bit: whether it lies above their median (the DC term
left out of the median). Scaling the brightness scales every coefficient alike, and
recompression or resizing changes mostly the frequencies the hash ignores, so such copies stay
within a few bits of the original. Two images count as copies when their hashes differ in at
most ``MineConfig.leak_hash_distance`` bits (docs/mining.md gives the measured margins).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

SIDE = 32  #: the grayscale image the DCT is taken of
BITS = 24  #: the lowest BITS x BITS DCT coefficients make the hash
HASH_BYTES = BITS * BITS // 8  #: a hash is this many uint8 (576 bits)
_BLOCK = 64  #: hashes compared at a time in ``nearest``


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    d = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d.astype(np.float32)


_DCT = _dct_matrix(SIDE)[:BITS]
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def image_hash(image: np.ndarray) -> np.ndarray:
    """uint8 [HASH_BYTES]: the pHash of an RGB uint8 [H, W, 3] image."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(image)).convert("L")
    gray = np.asarray(im.resize((SIDE, SIDE), Image.BOX), dtype=np.float32)
    low = (_DCT @ gray @ _DCT.T).ravel()
    return np.packbits(low > np.median(low[1:]))


def image_hashes(images: Iterable[np.ndarray], *, mirrored: bool = False) -> np.ndarray:
    """uint8 [n, HASH_BYTES] pHashes of ``images``; with ``mirrored``, then n more rows: those
    of their mirror images."""
    out, flipped = [], []
    for x in images:
        out.append(image_hash(x))
        if mirrored:
            flipped.append(image_hash(x[:, ::-1]))
    out += flipped
    return np.stack(out) if out else np.zeros((0, HASH_BYTES), np.uint8)


def nearest(hashes: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """int64 [n]: for each hash, the fewest bits in which it differs from a ``reference`` hash
    (one more than the hash's bits when ``reference`` is empty)."""
    return nearest_rows(hashes, reference)[0]


def nearest_rows(hashes: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int64 [n] bits to the nearest ``reference`` hash (as ``nearest``) and int64 [n] its row
    (ties: the lower row; -1 when ``reference`` is empty)."""
    hashes = np.asarray(hashes, dtype=np.uint8).reshape(-1, HASH_BYTES)
    reference = np.asarray(reference, dtype=np.uint8).reshape(-1, HASH_BYTES)
    bits = np.full(len(hashes), HASH_BYTES * 8 + 1, dtype=np.int64)
    rows = np.full(len(hashes), -1, dtype=np.int64)
    if not len(reference):
        return bits, rows
    for start in range(0, len(hashes), _BLOCK):
        d = hamming(hashes[start:start + _BLOCK, None, :], reference[None, :, :])
        rows[start:start + _BLOCK] = d.argmin(axis=1)
        bits[start:start + _BLOCK] = d.min(axis=1)
    return bits, rows


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """int64: the bits in which the hashes ``a`` and ``b`` differ (broadcast over leading
    axes, the last axis holding the HASH_BYTES bytes)."""
    diff = np.asarray(a, np.uint8) ^ np.asarray(b, np.uint8)
    if not hasattr(np, "bitwise_count"):  # numpy < 2
        return _POPCOUNT[diff].sum(axis=-1, dtype=np.int64)
    if diff.shape[-1] % 8 == 0:  # popcount 8 bytes at a time
        diff = np.ascontiguousarray(diff).view(np.uint64)
    return np.bitwise_count(diff).sum(axis=-1, dtype=np.int64)
