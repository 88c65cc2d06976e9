"""The worker side of embedding a pool: read a chunk of keys, decode each item (through the one
decoder), optionally detect and align faces, resize the crops.

Engines (``omnifer.pools.engines``) run :func:`read_chunk` in worker processes or actors; a bad
item never raises here, it comes back in :attr:`Chunk.skipped`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from omnifer.data.images import decode_bytes, resize
from omnifer.pools.embed_config import EmbedConfig
from omnifer.pools.source import PoolItem, PoolSource, item_id

CHUNK = 64  #: pool items per worker task


@dataclass
class Chunk:
    """What a worker hands back for a list of keys: crops, their rows, and what was skipped."""

    images: np.ndarray  #: uint8 [n, S, S, 3]
    rows: list[dict[str, Any]]  #: one per crop
    skipped: list[dict[str, Any]]  #: one per unreadable item or image without a face


def decode(item: PoolItem) -> tuple[np.ndarray | None, str | None]:
    """RGB uint8 [H, W, 3] of an item (through the one decoder), or why not."""
    if item.error is not None or item.data is None:
        return None, item.error or "no data"
    if isinstance(item.data, np.ndarray):
        return item.data, None
    return decode_bytes(item.data)


def read_chunk(source: PoolSource, keys: Sequence[str], *, size: int,
               detector: Any = None) -> Chunk:
    """Read, decode, (detect and align,) resize ``keys``; never raises for a bad item."""
    crops, rows, skipped = [], [], []
    for item in source.read(keys):
        image, reason = decode(item)
        sid = item_id(item.data) if item.data is not None else None
        if image is None:
            skipped.append({"key": item.key, "id": sid, "status": "bad", "reason": reason})
            continue
        if detector is None:
            crops.append(resize(image, size))
            rows.append({"key": item.key, "id": sid, "face": 0})
            continue
        from omnifer.faces import detect_and_align

        faces = detect_and_align(detector, image, size=112)
        if not faces:
            skipped.append({"key": item.key, "id": sid, "status": "no_face", "reason": None})
        for n, (face, crop) in enumerate(faces):
            crops.append(resize(crop, size))
            rows.append({"key": item.key, "id": sid, "face": n,
                         "box": [float(v) for v in face.box],
                         "landmarks": [float(v) for v in np.asarray(face.landmarks).ravel()],
                         "det_score": float(face.score)})
    images = np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
    return Chunk(images, rows, skipped)


def make_detector(config: EmbedConfig) -> Any:
    """The face detector ``config`` asks for, or None for pools of aligned crops."""
    if config.detect is None:
        return None
    from omnifer.faces import RetinaFaceDetector

    return RetinaFaceDetector(threshold=config.det_threshold, min_face=config.min_face,
                              device="cpu" if config.device == "cpu" else "auto")
