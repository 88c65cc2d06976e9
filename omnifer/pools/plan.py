"""What an embedding run still has to write: :class:`ShardPlan`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omnifer.artifacts import ShardedWriter
from omnifer.pools.embed_config import EmbedConfig
from omnifer.pools.keyfile import KeyFile


@dataclass
class ShardPlan:
    """The shards a run writes: shard ``start + j`` holds the keys at positions
    ``bounds(j)`` of ``keys`` (the keys left to embed, in listing order), ``config.shard_size``
    per shard.

    An engine writes the files of each shard (``omnifer.pools.shards``) and the shards are
    marked complete in ``writer``'s ``progress.json`` in shard order, so the completed shards
    are always the ones an uninterrupted run writes first, whichever engine wrote them.
    """

    source: Any  #: the listed pool source (the ray engine: an object reference to it)
    config: EmbedConfig
    writer: ShardedWriter
    start: int
    keys: KeyFile

    def __len__(self) -> int:
        """The number of shards."""
        return -(-len(self.keys) // self.config.shard_size)

    def bounds(self, j: int) -> tuple[int, int]:
        """``(start, stop)`` positions in :attr:`keys` of the ``j``-th shard's keys."""
        size = self.config.shard_size
        return j * size, min((j + 1) * size, len(self.keys))

    def index(self, j: int) -> int:
        """The shard number of the ``j``-th shard."""
        return self.start + j

    def path(self, j: int) -> Path:
        """The table path of the ``j``-th shard (its embeddings sit beside it, ``.npy``)."""
        return self.writer.path(self.start + j)
