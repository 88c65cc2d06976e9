"""The built-in pool formats, one module each; importing this package registers them all in
:data:`omnifer.pools.source.POOL_SOURCES`. Detection order is
:data:`omnifer.pools.source.DETECTION_ORDER`, not the order of these imports."""

from __future__ import annotations

from omnifer.pools.formats.folder import FolderSource
from omnifer.pools.formats.hf import HfSource
from omnifer.pools.formats.parquet import ParquetSource
from omnifer.pools.formats.recordio import RecordioSource
from omnifer.pools.formats.tsv import TsvSource
from omnifer.pools.formats.video import VideoSource
from omnifer.pools.formats.webdataset import WebdatasetSource

__all__ = [
    "FolderSource",
    "HfSource",
    "ParquetSource",
    "RecordioSource",
    "TsvSource",
    "VideoSource",
    "WebdatasetSource",
]
