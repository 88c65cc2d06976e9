"""Embedding batches: the crops of a shard's chunks, embedded in the same batches by every
engine.

The batches follow from the chunks alone (which crops each chunk keeps), never from timing or
from which process embeds them, so a shard embedded on the driver (the ``local`` engine) or
in a model actor (the ``ray`` engine) gets bit-identical embeddings, even on devices whose
kernels give results that depend on the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: crops -> (float16 embeddings [n, D], float32 feature norms [n]), as ``Embedder.features``
Embed = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
Embedded = tuple[np.ndarray, np.ndarray]


class ChunkBatcher:
    """Kept crops of consecutive chunks of one shard -> embeddings and feature norms, in fixed
    batches.

    Crops gather until, after a chunk, at least ``batch_size`` are waiting; then all of them go
    to ``embed`` in one call (which cuts them into batches of ``batch_size``). The crops left
    at the end of the shard go in one last call, made even when it holds none, so that an
    all-skipped shard still has embeddings of the model's width.
    """

    def __init__(self, embed: Embed, batch_size: int) -> None:
        self.embed, self.batch_size = embed, int(batch_size)
        self.pending: list[np.ndarray] = []

    def add(self, crops: np.ndarray) -> list[Embedded]:
        """Queue one chunk's kept crops; returns the embeddings and norms this completes (zero
        or one pair)."""
        self.pending.append(crops)
        if sum(map(len, self.pending)) >= self.batch_size:
            return self.finish()
        return []

    def finish(self) -> list[Embedded]:
        """Embed every crop still waiting; returns zero or one pair."""
        if not self.pending:
            return []
        out = self.embed(np.concatenate(self.pending))
        self.pending = []
        return [out]
