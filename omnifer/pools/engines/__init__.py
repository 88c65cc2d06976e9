"""Embedding engines: where a pool is listed, and its shards read, embedded and written.

An :class:`Engine` has two functions. ``prepare(task, *args, workers)`` runs ``task(*args)``
(:func:`omnifer.pools.prepare.prepare`: list the pool, write the keys left to a key file)
where the engine lists the pool, and returns its result. ``write(plan, ledger, *, workers,
**options) -> None`` writes every shard of a :class:`~omnifer.pools.plan.ShardPlan`. It
settles each chunk of keys in key order with :class:`~omnifer.pools.ledger.Ledger`
(duplicates, counts, bad items, progress; the ray engine in an actor, adding the counts to
the run's ledger), embeds the kept crops in the batches of
:class:`~omnifer.pools.batching.ChunkBatcher`, writes each shard through
:mod:`omnifer.pools.shards`, and marks the shards complete in the plan's writer in shard
order; so every engine writes the same shards, and resumes the others'. :data:`ENGINES` holds
them by name; an unknown name is a one-line error listing the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omnifer.pools.engines.local import local_chunks, local_prepare, local_shards
from omnifer.pools.engines.ray import ray_prepare, ray_shards
from omnifer.registry import Registry


@dataclass(frozen=True)
class Engine:
    """An embedding engine's two functions (see the module)."""

    prepare: Callable[..., Any]  #: ``(task, *args, workers) -> task(*args)``, run where it lists
    write: Callable[..., None]  #: ``(plan, ledger, *, workers, **options)``


ENGINES: Registry[Engine] = Registry("engine", fix="pass --engine local or --engine ray")
ENGINES.register("local", Engine(local_prepare, local_shards))
ENGINES.register("ray", Engine(ray_prepare, ray_shards))

__all__ = ["ENGINES", "Engine", "local_chunks", "local_shards", "ray_shards"]
