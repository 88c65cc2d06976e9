"""What an embedding run still has to write: :class:`ShardPlan`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omnifer.artifacts import ShardedWriter
from omnifer.pools.embed_config import EmbedConfig
from omnifer.pools.source import PoolSource


@dataclass
class ShardPlan:
    """The shards a run writes: shard ``start + j`` holds the pool keys ``shards[j]``, in order.

    An engine writes the files of each shard (``omnifer.pools.shards``) and the shards are
    marked complete in ``writer``'s ``progress.json`` in shard order, so the completed shards
    are always the ones an uninterrupted run writes first, whichever engine wrote them.
    """

    source: PoolSource
    config: EmbedConfig
    writer: ShardedWriter
    start: int
    shards: list[list[str]]

    def index(self, j: int) -> int:
        """The shard number of ``shards[j]``."""
        return self.start + j

    def path(self, j: int) -> Path:
        """The table path of ``shards[j]`` (its embeddings sit beside it, ``.npy``)."""
        return self.writer.path(self.start + j)
