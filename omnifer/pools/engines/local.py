"""The local engine: chunks of keys read in DataLoader worker processes on this machine.

It hands back chunks without embeddings; the driver (``embed_pool``) embeds the crops in
batches, duplicates left out. Workers end when the driver process dies.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from typing import Any

from omnifer.data.workers import exit_with_parent
from omnifer.pools.chunks import CHUNK, Chunk, make_detector, read_chunk
from omnifer.pools.embed_config import EmbedConfig
from omnifer.pools.source import PoolSource


class ChunkDataset:
    """A map-style dataset of chunks for a DataLoader (workers keep order)."""

    def __init__(self, source: PoolSource, chunks: list[list[str]], size: int,
                 detector: Any) -> None:
        self.source, self.chunks, self.size, self.detector = source, chunks, size, detector

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> Chunk:
        return read_chunk(self.source, self.chunks[i], size=self.size, detector=self.detector)


def local_chunks(source: PoolSource, keys: list[str], *, config: EmbedConfig,
                 workers: int = 2) -> Iterator[tuple[Chunk, None]]:
    """``(Chunk, None)`` of ``keys[i:i + CHUNK]`` for each ``i``, in order, read by ``workers``
    processes (0: in this process)."""
    from torch.utils.data import DataLoader

    chunks = [keys[i:i + CHUNK] for i in range(0, len(keys), CHUNK)]
    data = ChunkDataset(source, chunks, config.input_size, make_detector(config))
    loader = DataLoader(data, batch_size=None, num_workers=workers, collate_fn=_identity,
                        prefetch_factor=4 if workers else None,
                        worker_init_fn=functools.partial(exit_with_parent, os.getpid()))
    for chunk in loader:
        yield chunk, None


def _identity(x: Any) -> Any:
    return x
