"""Unlabeled face pools: sources that list and read every form a pool comes in.

``import omnifer.pools`` stays cheap: pyarrow, datasets and PyAV load only when a source
that needs them reads.
"""

from __future__ import annotations

from omnifer.pools.recordio import write_recordio
from omnifer.pools.sources import (
    IMAGE_EXTENSIONS,
    POOL_SOURCES,
    VIDEO_EXTENSIONS,
    PoolItem,
    PoolSource,
    detect_source,
    get_pool_source,
    item_id,
    open_pool,
    register_pool_source,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "POOL_SOURCES",
    "VIDEO_EXTENSIONS",
    "PoolItem",
    "PoolSource",
    "detect_source",
    "get_pool_source",
    "item_id",
    "open_pool",
    "register_pool_source",
    "write_recordio",
]
