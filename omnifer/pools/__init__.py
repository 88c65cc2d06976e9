"""Unlabeled face pools: sources that list and read every form a pool comes in.

``import omnifer.pools`` registers the built-in formats (``omnifer.pools.formats``) and stays
cheap: pyarrow, datasets and PyAV load only when a source that needs them reads.
"""

from __future__ import annotations

from omnifer.pools import formats  # noqa: F401  (registers the built-in sources)
from omnifer.pools.recordio import write_recordio
from omnifer.pools.source import (
    DETECTION_ORDER,
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
    "DETECTION_ORDER",
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
