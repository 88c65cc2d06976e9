"""The local engine: chunks of keys read in DataLoader worker processes on this machine, the
model on the driver.

:func:`local_prepare` lists the pool in this process. :func:`local_shards` writes a run's shards
one after the other: the keys of each shard are read from the run's key file, its chunks by
:func:`local_chunks`, settled in the run's ledger (duplicates, counts), and their kept
crops embedded on the driver in batches (duplicates left out). Workers end when the driver
process dies.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from omnifer.data.workers import exit_with_parent
from omnifer.pools.batching import ChunkBatcher, Embedded
from omnifer.pools.chunks import CHUNK, Chunk, make_detector, read_chunk
from omnifer.pools.embed_config import EmbedConfig
from omnifer.pools.ledger import Ledger
from omnifer.pools.plan import ShardPlan
from omnifer.pools.shards import write_shard
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


def local_prepare(task: Callable[..., Any], *args: Any, workers: int = 2) -> Any:
    """``task(*args)``: the run is prepared in this process."""
    return task(*args)


def local_shards(plan: ShardPlan, ledger: Ledger, *, workers: int = 2) -> None:
    """Write every shard of ``plan``, in order, each marked complete once written."""
    embed = DriverEmbedder(plan.config)
    for j in range(len(plan)):
        shard_keys = plan.keys.slice(*plan.bounds(j))
        rows: list[dict[str, Any]] = []
        embeddings: list[Embedded] = []
        batcher = ChunkBatcher(embed, plan.config.batch_size)
        for chunk, _ in local_chunks(plan.source, shard_keys, config=plan.config,
                                     workers=workers):
            keep = ledger.settle(chunk.rows, chunk.skipped)
            embeddings += batcher.add(chunk.images[np.flatnonzero(keep)])
            rows += chunk.rows + chunk.skipped
            ledger.report()
        embeddings += batcher.finish()
        write_shard(plan.writer, plan.index(j), rows, embeddings)


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


class DriverEmbedder:
    """The model on the driver, loaded when the first batch is embedded."""

    def __init__(self, config: EmbedConfig) -> None:
        self.config = config
        self.embedder: Any = None

    def __call__(self, images: np.ndarray) -> Embedded:
        if self.embedder is None:
            from omnifer.models.embedder import Embedder

            self.embedder = Embedder(self.config.model, device=self.config.device,
                                     batch_size=self.config.batch_size)
        return self.embedder.features(images)


def _identity(x: Any) -> Any:
    return x
