"""Embedding engines: where the shards of a pool are read, embedded and written.

An engine is a function ``(plan, ledger, *, workers, **options) -> None`` that writes every
shard of a :class:`~omnifer.pools.plan.ShardPlan`. It settles each chunk of keys in the run's
:class:`~omnifer.pools.ledger.Ledger` in key order (duplicates, counts, bad items, progress),
embeds the kept crops in the batches of :class:`~omnifer.pools.batching.ChunkBatcher`, writes
each shard through :mod:`omnifer.pools.shards`, and marks the shards complete in the plan's
writer in shard order; so every engine writes the same shards, and resumes the others'.
:data:`ENGINES` holds them by name; an unknown name is a one-line error listing the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable

from omnifer.pools.engines.local import local_chunks, local_shards
from omnifer.pools.engines.ray import ray_shards
from omnifer.registry import Registry

Engine = Callable[..., None]

ENGINES: Registry[Engine] = Registry("engine", fix="pass --engine local or --engine ray")
ENGINES.register("local", local_shards)
ENGINES.register("ray", ray_shards)

__all__ = ["ENGINES", "Engine", "local_chunks", "local_shards", "ray_shards"]
