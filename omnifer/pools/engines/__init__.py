"""Embedding engines: where the chunks of a pool are read (and, for some, embedded).

An engine is a function ``(source, keys, *, config, workers) -> iterator of (Chunk,
embeddings or None)`` that hands back the chunks of ``keys`` in order; ``None`` leaves the
embedding to the driver (``omnifer.pools.embed.embed_pool``). :data:`ENGINES` holds them by
name; an unknown name is a one-line error listing the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from omnifer.pools.engines.local import local_chunks
from omnifer.pools.engines.ray import ray_chunks
from omnifer.registry import Registry

Engine = Callable[..., Iterator[tuple[Any, Any]]]

ENGINES: Registry[Engine] = Registry("engine", fix="pass --engine local or --engine ray")
ENGINES.register("local", local_chunks)
ENGINES.register("ray", ray_chunks)

__all__ = ["ENGINES", "Engine", "local_chunks", "ray_chunks"]
