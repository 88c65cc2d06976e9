"""The worker side of the ray engine: a CPU task that reads a block of keys, the actor that
checks duplicates, and the model actor that embeds and writes a shard.

:func:`read_block` runs as a Ray CPU task: it reads a block of pool keys from the run's key
file, then reads, decodes, (detects and aligns,) and resizes their items in the local
engine's 64-key chunks, and returns two objects, the block's row ids (small: they go to the
duplicate check) and the block itself (crops and full rows: they stay in the object store
until a model actor takes them).

:class:`DuplicateCheck` is the Ray actor that holds the run's content ids and settles each
block's duplicates and counts, in key order.

:class:`ShardEmbedder` is a long-lived Ray actor holding the model. It takes the blocks of a
shard one by one (Ray runs one caller's calls to an actor in order), with the keep masks the
duplicate check settled, embeds the kept crops in the local engine's batches (which may span
two blocks of the shard) and writes the shard's files; the driver marks the shard complete.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from omnifer.data.badfiles import BadFiles
from omnifer.pools.batching import ChunkBatcher, Embedded
from omnifer.pools.chunks import CHUNK, Chunk, make_detector, read_chunk
from omnifer.pools.content_ids import ContentIds
from omnifer.pools.embed_config import EmbedConfig
from omnifer.pools.keyfile import KeyFile
from omnifer.pools.ledger import BadItem, Ledger
from omnifer.pools.shards import write_shard_files
from omnifer.pools.source import PoolSource

#: the ids half of a block: per chunk, (rows with only ``key`` and ``id``, skipped items)
BlockIds = list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]

# what a worker process keeps across the tasks it runs: the pool source (which may hold the
# pool's whole listing) and the face detector, each made once, not once per block
_SOURCES: dict[str, PoolSource] = {}
_DETECTORS: dict[tuple[Any, ...], Any] = {}


def read_block(source: list[Any], config: EmbedConfig, keyfile: KeyFile, start: int,
               stop: int) -> tuple[BlockIds, list[Chunk]]:
    """``(ids, chunks)`` of the keys at positions ``start`` to ``stop`` of ``keyfile``, read in
    chunks of ``CHUNK`` keys; never raises for a bad item (it comes back among the chunk's
    skipped items).

    ``source`` is ``[object reference of the pool source]``: wrapped, so that Ray hands over
    the reference and the worker fetches and unpickles the source once, not for every block.
    """
    pool = _source(source[0])
    keys = keyfile.slice(start, stop)
    detector = _detector(config)
    chunks = [read_chunk(pool, keys[i:i + CHUNK], size=config.input_size, detector=detector)
              for i in range(0, len(keys), CHUNK)]
    ids = [([{"key": r["key"], "id": r["id"]} for r in c.rows], c.skipped) for c in chunks]
    return ids, chunks


def _source(ref: Any) -> PoolSource:
    """The pool source behind ``ref``, fetched once per worker process."""
    key = ref.hex()
    if key not in _SOURCES:
        import ray

        _SOURCES.clear()
        _SOURCES[key] = ray.get(ref)
    return _SOURCES[key]


def _detector(config: EmbedConfig) -> Any:
    """The face detector of ``config``, made once per worker process."""
    key = (config.detect, config.det_threshold, config.min_face, config.device)
    if key not in _DETECTORS:
        _DETECTORS.clear()
        _DETECTORS[key] = make_detector(config)
    return _DETECTORS[key]


class DuplicateCheck:
    """A Ray actor with the run's content ids: it settles the blocks of a run (duplicates and
    counts, :meth:`Ledger.settle <omnifer.pools.ledger.Ledger.settle>`) in the order the
    driver queued them, which is key order (Ray runs one caller's calls to an actor in order,
    each once its block is read). The driver keeps only the counts."""

    def __init__(self, seen: ContentIds) -> None:
        self.seen = seen

    def settle(self, ids: BlockIds) -> tuple[list[list[bool]], tuple[dict[str, int],
                                                                       list[BadItem]]]:
        """``(keeps, (counts, bad items))`` of a block: per chunk and row, whether the crop is
        embedded; what the block adds to the run's counts, and its unreadable items (the
        driver applies the bad-file policy)."""
        ledger = Ledger(seen=self.seen, counts=Counter(), total=0,
                        bad=BadFiles("skip", fix="", what="unreadable pool item"))
        keeps = [ledger.settle(rows, skipped) for rows, skipped in ids]
        return keeps, (dict(ledger.counts), ledger.bad.items)


class ShardEmbedder:
    """A Ray actor with the model: the settled blocks of a shard in, one by one, the shard's
    files out.

    ``device`` is the model's device in the actor (``cuda`` for an actor given a GPU: it sees
    its own GPU as ``cuda:0``). A model that cannot be loaded does not kill the actor: its
    error is raised by every call, so that the driver receives it (Ray keeps the exception
    of a method call, not that of a failed constructor).
    """

    def __init__(self, model: str, device: str, batch_size: int) -> None:
        from omnifer.models.embedder import Embedder

        self.error: Exception | None = None
        try:
            self.embedder = Embedder(model, device=device, batch_size=batch_size)
        except Exception as exc:
            self.error = exc
        self.batch_size = batch_size
        #: shard -> (its rows, embeddings and batcher so far), for the shards being embedded
        self.open: dict[int, tuple[list[dict[str, Any]], list[Embedded], ChunkBatcher]] = {}

    def ready(self) -> int:
        """The process id of the actor, once its model is loaded; raises the model's error."""
        import os

        if self.error is not None:
            raise self.error
        return os.getpid()

    def add(self, shard: int, keeps: list[list[bool]], block: list[Chunk]) -> int:
        """Embed the next block of ``shard`` (blocks come in key order): ``keeps`` says, per
        chunk and row, whether to embed the crop or record a duplicate; returns its chunks."""
        self.ready()
        rows, embeddings, batcher = self.open.setdefault(
            shard, ([], [], ChunkBatcher(self.embedder.features, self.batch_size)))
        for chunk, keep in zip(block, keeps, strict=True):
            for row, kept in zip(chunk.rows, keep, strict=True):
                row["status"] = "ok" if kept else "duplicate"
            embeddings += batcher.add(chunk.images[np.flatnonzero(keep)])
            rows += chunk.rows + chunk.skipped
        return len(block)

    def write(self, shard: int, path: str) -> int:
        """Write ``shard``, all of whose blocks were added, with its table at ``path``;
        returns its rows."""
        self.ready()
        rows, embeddings, batcher = self.open.pop(shard)
        embeddings += batcher.finish()
        return write_shard_files(Path(path), rows, embeddings)
