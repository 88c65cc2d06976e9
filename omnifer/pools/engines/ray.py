"""The ray engine: a pool's shards read, embedded and written on a Ray cluster; the driver only
coordinates.

For one ``embed_pool`` call, :func:`ray_prepare` and :func:`ray_shards` run this topology:

* **The pool is listed in a Ray task**: :func:`ray_prepare` runs the run's preparation
  (:func:`omnifer.pools.prepare.prepare`) in a CPU task of its own worker process, which lists
  the pool, reads the earlier shards and writes the keys left to embed to the run's key file
  (:class:`~omnifer.pools.keyfile.KeyFile`). The driver fetches only the counts and the keys
  of earlier shards that the pool no longer lists (usually none); the content ids already
  embedded and the listed source stay in the object store, for the duplicate check and the
  reading tasks.
* **Work items are blocks of keys**: ``block`` keys (default :data:`BLOCK`, at most one
  shard's), cut inside a shard at the local engine's 64-key chunks, never across two shards,
  and named by their positions in the key file. Each block is one Ray CPU task
  (:func:`~omnifer.pools.engines.ray_workers.read_block`) that reads its keys from the key
  file, then reads, decodes, (detects and aligns,) and resizes the items, and returns two
  objects: the block's row ids (key and content id per crop, plus the skipped items) and the
  block itself (crops and full rows), which stays in the object store. At most ``workers``
  blocks are read at once.
* **Duplicates and counts are settled by one actor, in key order**
  (:class:`~omnifer.pools.engines.ray_workers.DuplicateCheck`, which holds the run's content
  ids). Duplicate detection is global: an image whose bytes an earlier key already had (in
  this shard, an earlier shard or an earlier run) is a ``duplicate`` and is not embedded. The
  driver queues each block's settling when it starts reading the block, so the actor settles
  the blocks strictly in key order (Ray runs one caller's calls to an actor in the order they
  were made, each once its arguments are ready), chunk by chunk, with
  :class:`~omnifer.pools.ledger.Ledger`, the very code the local engine runs; so statuses,
  counts and the set of embedded crops are the local engine's. The driver fetches each
  block's counts and unreadable items (in key order) and applies the bad-file policy.
* **The model runs in long-lived actors**
  (:class:`~omnifer.pools.engines.ray_workers.ShardEmbedder`): one per GPU when the cluster
  has GPUs and the device is not ``cpu``, else ``workers`` CPU actors (fewer where the
  cluster has too few CPUs to leave one for reading). They are created once per call and
  ended when it returns.
* **Each shard is embedded and written by one actor.** A shard's first block goes to the
  least busy actor, and its other blocks follow to the same actor, each with its per-row keep
  masks from the duplicate check; the actor embeds the kept crops in the local engine's
  batches (:class:`~omnifer.pools.batching.ChunkBatcher`, whose batches may span two blocks)
  and, after the last block, writes the shard's ``.npy`` and ``.parquet``
  (:func:`~omnifer.pools.shards.write_shard_files`): the local engine's files, byte for byte,
  where the model's kernels give the same numbers in both processes.
* **The driver marks shards complete in shard order.** Only the driver writes
  ``progress.json``, and a shard is marked once it and every shard before it are written and
  counted; so the completed shards are always the prefix an uninterrupted run writes first, a
  killed run resumes exactly like a local one, and either engine resumes the other's shards.
  A shard written but not yet marked when the run dies is written again, identically.

Memory of the driver: object references, and the counts and unreadable items of one block at
a time; the pool's listing, the keys, the content ids, the crops and the embeddings stay in
Ray's tasks, actors and object store and in the key file, so the driver's memory does not
grow with the pool. At most ``workers`` blocks plus one shard per actor and one more are held
at once (read, settled, or queued on an actor), which bounds the object store's share too.
On a multi-node cluster the pool, the model and the run folder must be reachable under the
same paths from every node (shared storage).
"""

from __future__ import annotations

import atexit
import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omnifer.errors import OmniferError
from omnifer.pools.chunks import CHUNK
from omnifer.pools.embed_config import EmbedConfig
from omnifer.pools.ledger import Ledger
from omnifer.pools.plan import ShardPlan

log = logging.getLogger(__name__)

BLOCK = 2048  #: keys per Ray reading task by default (never more than a shard's)


def ray_prepare(task: Callable[..., Any], source: Any, *args: Any, workers: int = 1
                ) -> tuple[Any, Any, Any]:
    """``task(source, *args)`` (which returns what it found, the content ids already embedded
    and the listed source) in a Ray CPU task whose worker process ends with it; returns what
    it found, and object references to the ids and the source, which the driver never
    fetches."""
    ray = connect(workers)
    remote = ray.remote(num_cpus=1, num_returns=3, max_calls=1)(task)
    found, seen, listed = remote.remote(source, *args)
    try:
        return ray.get(found), seen, listed
    except Exception as exc:
        cause = _omnifer_cause(exc)
        if cause is None:
            raise
        raise cause from None


def ray_shards(plan: ShardPlan, ledger: Ledger, *, workers: int = 1,
               block: int | None = None) -> None:
    """Write every shard of ``plan`` on the Ray cluster (``RAY_ADDRESS``, the running instance,
    or a local one), each marked complete in shard order; ``block``: keys per reading task
    (default: :data:`BLOCK` or the shard size, whichever is smaller; rounded up to whole
    64-key chunks)."""
    if block is not None and int(block) < 1:
        raise OmniferError(f"block is {block}; use at least 1 key per Ray task")
    if not len(plan):
        return
    ray = connect(workers)
    gpus, n_actors = actor_count(ray, plan.config, workers)
    # a short run (a few new files) starts no more actors than it has shards
    actors = start_model_actors(ray, min(n_actors, len(plan)), plan.config,
                                gpu=bool(gpus))
    check = start_duplicate_check(ray, ledger.seen)
    size = min(int(block or BLOCK), plan.config.shard_size)
    run = None
    try:
        run = _Pipeline(ray, plan, ledger, actors, check, readers=max(int(workers), 1),
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
        for actor in [*actors, check]:
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


def start_duplicate_check(ray: Any, seen: Any) -> Any:
    """The run's duplicate-check actor (:class:`DuplicateCheck`), given the content ids
    already embedded (``seen``: their object reference, which the driver never fetches)."""
    from omnifer.pools.engines.ray_workers import DuplicateCheck

    return ray.remote(DuplicateCheck).options(num_cpus=0).remote(seen)


@dataclass
class _Block:
    """One work item on its way: a block of keys of shard ``shard``."""

    shard: int
    last: bool  #: the shard's last block
    tally: Any  #: reference of the block's counts and bad items, from the duplicate check


class _Pipeline:
    """The driver's loop: read blocks, have the duplicate check settle them in key order,
    stream each shard's blocks to one actor, count them, mark the written shards complete in
    shard order."""

    def __init__(self, ray: Any, plan: ShardPlan, ledger: Ledger, actors: list[Any],
                 check: Any, *, readers: int, step: int) -> None:
        from omnifer.pools.engines.ray_workers import read_block

        self.ray, self.plan, self.ledger, self.actors = ray, plan, ledger, actors
        self.check = check  # the duplicate-check actor
        self.readers = readers
        self.read = ray.remote(read_block).options(num_cpus=1, num_returns=2)
        self.source = [plan.source]  # wrapped: see read_block
        self.blocks = ((j, i, min(i + step, stop), i + step >= stop)
                       for j in range(len(plan)) for start, stop in [plan.bounds(j)]
                       for i in range(start, stop, step))
        self.next_block: tuple[int, int, int, bool] | None = next(self.blocks, None)
        # blocks held (being read, settled, or queued on an actor) at most: one shard per
        # actor and one more, besides the blocks being read
        self.window = readers + (len(actors) + 1) * -(-plan.config.shard_size // step)
        self.held = 0
        self.reading: set[Any] = set()  # ids references of the blocks being read
        self.counting: deque[_Block] = deque()  # blocks not counted yet, in key order
        self.adding: dict[Any, int] = {}  # reference of a block's embedding -> actor
        self.writing: dict[Any, int] = {}  # reference of a shard's writing -> shard
        self.load = [0] * len(actors)  # blocks queued on each actor
        self.owner: dict[int, int] = {}  # shard being embedded -> its actor
        self.items: dict[int, int] = {}  # shard -> its items, counted so far
        self.counted = 0  # shards all of whose blocks are counted
        self.written: dict[int, int] = {}  # shard -> rows, written but not yet marked
        self.marked = 0  # shards marked complete so far
        self.committed_items = ledger.earlier_items

    def run(self) -> None:
        self._submit()  # reading starts while the actors load the model
        self.ray.get([actor.ready.remote() for actor in self.actors])  # a bad model fails here
        while self.marked < len(self.plan):
            self._submit()
            # tallies come in key order (the check settles in order): wait for the next one
            waiting = [*self.reading, *([self.counting[0].tally] if self.counting else []),
                       *self.adding, *self.writing]
            if not waiting:  # cannot happen while a shard is unmarked; never wait forever
                raise RuntimeError(f"ray engine: {self.marked} of {len(self.plan)} "
                                   "shards marked and nothing under way")
            ready, _ = self.ray.wait(waiting, num_returns=1)
            for ref in ready:
                if ref in self.reading:
                    self.reading.discard(ref)
                elif ref in self.adding:
                    self.ray.get(ref)
                    self.load[self.adding.pop(ref)] -= 1
                    self.held -= 1
                elif ref in self.writing:
                    self.written[self.writing.pop(ref)] = self.ray.get(ref)
                else:
                    self._count(self.counting.popleft())
            self._mark()

    def stop(self) -> None:
        """Let go of the work still under way (after an error or an interrupt): each read ends
        on its own within one block, and its result is freed with its reference. Reads are not
        cancelled: a cancel that races with a task's completion can abort the driver process
        inside Ray (a failed internal check, seen with Ray 2.60), where the caller must get
        the run's own error."""
        self.reading.clear()
        self.counting.clear()

    def _submit(self) -> None:
        """Start reading the next blocks, and queue their settling on the duplicate check and
        their embedding on their shard's actor (the least busy one, for a shard's first block;
        Ray runs one caller's calls to an actor in the order they were made); after a shard's
        last block, queue that actor's writing of the shard."""
        while (self.next_block is not None and len(self.reading) < self.readers
               and self.held < self.window):
            j, start, stop, last = self.next_block
            ids, data = self.read.remote(self.source, self.plan.config, self.plan.keys, start,
                                         stop)
            keeps, tally = self.check.settle.options(num_returns=2).remote(ids)
            if j not in self.owner:
                self.owner[j] = min(range(len(self.actors)), key=self.load.__getitem__)
            actor = self.owner[j]
            self.adding[self.actors[actor].add.remote(j, keeps, data)] = actor
            self.load[actor] += 1
            if last:
                path = str(self.plan.path(j).resolve())
                self.writing[self.actors[actor].write.remote(j, path)] = j
                del self.owner[j]
            self.counting.append(_Block(j, last, tally))
            self.reading.add(ids)
            self.held += 1
            self.next_block = next(self.blocks, None)

    def _count(self, block: _Block) -> None:
        """Add a settled block's counts and bad items to the run's ledger (which applies the
        bad-file policy: under ``error`` the run stops here)."""
        counts, bad = self.ray.get(block.tally)
        self.ledger.add(counts, bad)
        self.items[block.shard] = self.items.get(block.shard, 0) + counts.get("items", 0)
        self.counted += block.last

    def _mark(self) -> None:
        """Mark complete, in order, every written and counted shard whose predecessors are
        marked."""
        while self.marked in self.written and self.marked < self.counted:
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
