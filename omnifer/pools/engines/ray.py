"""The ray engine: a pool's shards read, embedded and written on a Ray cluster; the driver only
coordinates.

For one ``embed_pool`` call, :func:`ray_shards` runs this topology:

* **Work items are blocks of keys**: ``block`` keys (default :data:`BLOCK`, at most one
  shard's), cut inside a shard at the local engine's 64-key chunks, never across two shards.
  Each block is one Ray CPU task (:func:`~omnifer.pools.engines.ray_workers.read_block`) that
  reads, decodes, (detects and aligns,) and resizes it, and returns two objects: the block's
  row ids (key and content id per crop, plus the skipped items) and the block itself (crops
  and full rows), which stays in the object store. At most ``workers`` blocks are read at
  once.
* **The model runs in long-lived actors**
  (:class:`~omnifer.pools.engines.ray_workers.ShardEmbedder`): one per GPU when the cluster
  has GPUs and the device is not ``cpu``, else ``workers`` CPU actors (fewer where the
  cluster has too few CPUs to leave one for reading). They are created once per call and
  ended when it returns.
* **Duplicates and counts are settled on the driver, in key order.** Duplicate detection is
  global: an image whose bytes an earlier key already had (in this shard, an earlier shard or
  an earlier run) is a ``duplicate`` and is not embedded. The driver fetches only the row ids
  of each block and settles the blocks strictly in key order, chunk by chunk, in the run's
  :class:`~omnifer.pools.ledger.Ledger`, the very code the local engine runs; so statuses,
  counts and the set of embedded crops are the local engine's.
* **Each shard is embedded and written by one actor.** A shard's first settled block goes to
  the least busy actor, and its other blocks follow to the same actor, with their per-row keep
  masks; the actor embeds the kept crops in the local engine's batches
  (:class:`~omnifer.pools.batching.ChunkBatcher`, whose batches may span two blocks) and,
  after the last block, writes the shard's ``.npy`` and ``.parquet``
  (:func:`~omnifer.pools.shards.write_shard_files`): the local engine's files, byte for byte,
  where the model's kernels give the same numbers in both processes.
* **The driver marks shards complete in shard order.** Only the driver writes
  ``progress.json``, and a shard is marked once it and every shard before it are written; so
  the completed shards are always the prefix an uninterrupted run writes first, a killed run
  resumes exactly like a local one, and either engine resumes the other's shards. A shard
  written but not yet marked when the run dies is written again, identically.

Memory of the driver: the row ids of the blocks read but not yet settled, object references,
the pool's key listing and the ledger's set of content ids (16 bytes per embedded image,
:mod:`omnifer.pools.content_ids`), both of which the local engine holds too; crops and
embeddings stay in the object store and the actors, so the driver's memory does not grow
with the blocks or shards of the pool. At most ``workers`` blocks plus one shard per actor
and one more are held at once (read, waiting, or queued on an actor), which bounds the
object store's share too. On a multi-node cluster the pool, the model and the run folder must be
reachable under the same paths from every node (shared storage).
"""

from __future__ import annotations

import atexit
import logging
import os
from collections import deque
from dataclasses import dataclass
from typing import Any

from omnifer.errors import OmniferError
from omnifer.pools.chunks import CHUNK
from omnifer.pools.embed_config import EmbedConfig
from omnifer.pools.ledger import Ledger
from omnifer.pools.plan import ShardPlan

log = logging.getLogger(__name__)

BLOCK = 2048  #: keys per Ray reading task by default (never more than a shard's)


def ray_shards(plan: ShardPlan, ledger: Ledger, *, workers: int = 1,
               block: int | None = None) -> None:
    """Write every shard of ``plan`` on the Ray cluster (``RAY_ADDRESS``, the running instance,
    or a local one), each marked complete in shard order; ``block``: keys per reading task
    (default: :data:`BLOCK` or the shard size, whichever is smaller; rounded up to whole
    64-key chunks)."""
    if block is not None and int(block) < 1:
        raise OmniferError(f"block is {block}; use at least 1 key per Ray task")
    if not plan.shards:
        return
    ray = connect(workers)
    gpus, n_actors = actor_count(ray, plan.config, workers)
    # a short run (a few new files) starts no more actors than it has shards
    actors = start_model_actors(ray, min(n_actors, len(plan.shards)), plan.config,
                                gpu=bool(gpus))
    size = min(int(block or BLOCK), plan.config.shard_size)
    run = None
    try:
        run = _Pipeline(ray, plan, ledger, actors, readers=max(int(workers), 1),
                        step=-(-size // CHUNK) * CHUNK)
        run.run()
    except Exception as exc:
        cause = _omnifer_cause(exc)
        if cause is None:
            raise
        raise cause from None
    finally:
        if run is not None:
            run.stop()
        for actor in actors:
            ray.kill(actor)


def actor_count(ray: Any, config: EmbedConfig, workers: int) -> tuple[int, int]:
    """``(GPUs of the cluster used, model actors)`` for ``config`` on the connected cluster."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if config.device != "cpu" else 0
    cpus = int(resources.get("CPU", 0))
    if gpus:
        if cpus < 1:
            raise OmniferError("the Ray cluster has no CPU to read the pool with; add a node "
                               "with CPUs or use --engine local")
        return gpus, gpus
    if config.device not in ("cpu", "auto"):
        raise OmniferError(f"device is {config.device!r} but the Ray cluster has no GPU; pass "
                           "--device cpu (or auto), or connect to a cluster with GPUs")
    if cpus < 2:
        raise OmniferError(f"the Ray cluster has {cpus} CPU; the ray engine needs at least 2 "
                           "(one to read, one for the model): use a larger cluster or "
                           "--engine local")
    n = min(max(int(workers), 1), cpus - 1)
    if n < workers:
        log.warning("the Ray cluster has %d CPUs: running %d model actors, not %d, to leave "
                    "one CPU for reading", cpus, n, workers)
    return 0, n


def start_model_actors(ray: Any, n: int, config: EmbedConfig, *, gpu: bool) -> list[Any]:
    """``n`` model actors (:class:`ShardEmbedder`), each with one GPU or one CPU."""
    from omnifer.pools.engines.ray_workers import ShardEmbedder

    options = {"num_gpus": 1, "num_cpus": 0} if gpu else {"num_cpus": 1}
    device = "cuda" if gpu else config.device  # an actor sees its own GPU as cuda:0
    cls = ray.remote(ShardEmbedder).options(**options)
    return [cls.remote(config.model, device, config.batch_size) for _ in range(n)]


@dataclass
class _Block:
    """One work item on its way: a block of keys of shard ``shard``."""

    shard: int
    last: bool  #: the shard's last block
    data: Any  #: object reference of the block (crops and rows)
    ids: Any = None  #: the block's row ids, once read


class _Pipeline:
    """The driver's loop: read blocks, settle them in key order, stream each shard's blocks to
    one actor, mark the written shards complete in shard order."""

    def __init__(self, ray: Any, plan: ShardPlan, ledger: Ledger, actors: list[Any], *,
                 readers: int, step: int) -> None:
        from omnifer.pools.engines.ray_workers import read_block

        self.ray, self.plan, self.ledger, self.actors = ray, plan, ledger, actors
        self.readers = readers
        self.read = ray.remote(read_block).options(num_cpus=1, num_returns=2)
        self.source = [ray.put(plan.source)]  # wrapped: see read_block
        self.blocks = ((j, keys[i:i + step], i + step >= len(keys))
                       for j, keys in enumerate(plan.shards) for i in range(0, len(keys), step))
        self.next_block: tuple[int, list[str], bool] | None = next(self.blocks, None)
        # blocks held (being read, waiting, or queued on an actor) at most: one shard per
        # actor and one more, besides the blocks being read
        self.window = readers + (len(actors) + 1) * -(-plan.config.shard_size // step)
        self.held = 0
        self.order: deque[_Block] = deque()  # blocks not settled yet, in key order
        self.reading: dict[Any, _Block] = {}  # ids reference -> block
        self.adding: dict[Any, int] = {}  # reference of a block's embedding -> actor
        self.writing: dict[Any, int] = {}  # reference of a shard's writing -> shard
        self.load = [0] * len(actors)  # blocks queued on each actor
        self.owner: dict[int, int] = {}  # shard being embedded -> its actor
        self.items: dict[int, int] = {}  # shard -> its items, counted as settled
        self.written: dict[int, int] = {}  # shard -> rows, written but not yet marked
        self.marked = 0  # shards marked complete so far
        self.committed_items = ledger.earlier_items

    def run(self) -> None:
        self._submit_reads()  # reading starts while the actors load the model
        self.ray.get([actor.ready.remote() for actor in self.actors])  # a bad model fails here
        while self.marked < len(self.plan.shards):
            self._settle()
            self._submit_reads()
            waiting = [*self.reading, *self.adding, *self.writing]
            if not waiting:  # cannot happen while a shard is unmarked; never wait forever
                raise RuntimeError(f"ray engine: {self.marked} of {len(self.plan.shards)} "
                                   "shards marked and nothing under way")
            ready, _ = self.ray.wait(waiting, num_returns=1)
            for ref in ready:
                if ref in self.reading:
                    self.reading.pop(ref).ids = self.ray.get(ref)
                elif ref in self.adding:
                    self.ray.get(ref)
                    self.load[self.adding.pop(ref)] -= 1
                    self.held -= 1
                else:
                    self.written[self.writing.pop(ref)] = self.ray.get(ref)
                    self._mark()

    def stop(self) -> None:
        """Let go of the reads still under way (after an error or an interrupt): each ends
        on its own within one block, and its result is freed with its reference. They are not
        cancelled: a cancel that races with a task's completion can abort the driver process
        inside Ray (a failed internal check, seen with Ray 2.60), where the caller must get
        the run's own error."""
        self.reading.clear()
        self.order.clear()

    def _submit_reads(self) -> None:
        while (self.next_block is not None and len(self.reading) < self.readers
               and self.held < self.window):
            j, keys, last = self.next_block
            ids, data = self.read.remote(self.source, self.plan.config, keys)
            block = _Block(j, last, data)
            self.order.append(block)
            self.reading[ids] = block
            self.held += 1
            self.next_block = next(self.blocks, None)

    def _settle(self) -> None:
        """Settle every read block whose predecessors are settled, in key order, and send it to
        its shard's actor (the least busy one, for a shard's first block); after a shard's
        last block, ask that actor to write the shard."""
        while self.order and self.order[0].ids is not None:
            block = self.order.popleft()
            j = block.shard
            before = self.ledger.counts["items"]
            keeps = [self.ledger.settle(rows, skipped) for rows, skipped in block.ids]
            self.items[j] = self.items.get(j, 0) + self.ledger.counts["items"] - before
            if j not in self.owner:
                self.owner[j] = min(range(len(self.actors)), key=self.load.__getitem__)
            actor = self.owner[j]
            self.adding[self.actors[actor].add.remote(j, keeps, block.data)] = actor
            self.load[actor] += 1
            if block.last:
                path = str(self.plan.path(j).resolve())
                self.writing[self.actors[actor].write.remote(j, path)] = j
                del self.owner[j]

    def _mark(self) -> None:
        """Mark complete, in order, every written shard whose predecessors are marked."""
        while self.marked in self.written:
            j = self.marked
            self.plan.writer.mark_done(self.plan.index(j), rows=self.written.pop(j))
            self.committed_items += self.items.pop(j)
            self.ledger.report(self.committed_items)
            self.marked += 1


def _omnifer_cause(exc: BaseException) -> OmniferError | None:
    """The :class:`OmniferError` that a Ray task or actor raised (Ray wraps it with its
    traceback), to raise again as the driver's own one-line error; None for other errors."""
    seen: BaseException | None = exc
    while getattr(seen, "cause", None) is not None:
        seen = seen.cause  # type: ignore[union-attr]
    return seen if seen is not exc and isinstance(seen, OmniferError) else None


def connect(workers: int) -> Any:
    """The ``ray`` module, connected to the running instance or to RAY_ADDRESS's cluster, else
    to a local instance for ``workers`` reading tasks and ``workers`` CPU model actors,
    started once and shut down at exit."""
    try:
        import ray
    except ImportError:
        raise OmniferError(
            "the ray engine needs Ray, which is not installed; install the ray extra: "
            "pip install 'omnifer[ray]'"
        ) from None
    if ray.is_initialized():
        return ray
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False, ignore_reinit_error=True)
    else:
        ray.init(num_cpus=2 * max(int(workers), 1), include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)
    atexit.register(ray.shutdown)
    return ray
