"""Embedding a pool: decode (and optionally detect and align) in workers, embed with the
primitive model in batches, write resumable shards (:mod:`omnifer.pools.shards`).

The work unit is a shard of up to ``shard_size`` pool keys. Keys already embedded (in a
finished shard of this run, or of an earlier run over the same pool with the same config)
are skipped, the rest are cut into new shards in listing order, so a killed run started
again writes exactly the shards an uninterrupted run would have written, and files added to
the pool later land in new shards of the next run. A key of an earlier run that the pool no
longer lists (a renamed, moved or deleted file) is counted as ``vanished``; an image whose
only embedding belonged to such a key is embedded again under its new key. A shard that is
missing or cannot be read is left out and its keys are embedded again.

An engine (:data:`ENGINES`: ``local`` or ``ray``) lists the pool and writes the keys left to
the run's key file (:mod:`omnifer.pools.prepare`; the ray engine does it in a Ray task), then
reads, embeds and writes the shards of the run's :class:`~omnifer.pools.plan.ShardPlan`;
duplicates and counts are settled chunk by chunk in key order by one
:class:`~omnifer.pools.ledger.Ledger` (the ray engine's lives in an actor and the driver adds
up its counts), so both engines write the same shards.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omnifer.artifacts import ShardedWriter, fingerprint
from omnifer.data.badfiles import BadFiles
from omnifer.errors import OmniferError
from omnifer.pools.embed_config import EmbedConfig
from omnifer.pools.engines import ENGINES
from omnifer.pools.keyfile import KeyFile
from omnifer.pools.ledger import MAX_BAD_ITEMS, BadItem, Ledger
from omnifer.pools.plan import ShardPlan
from omnifer.pools.prepare import prepare
from omnifer.pools.source import PoolSource

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

__all__ = ["MAX_BAD_ITEMS", "BadItem", "EmbedResult", "Progress", "embed_pool"]


@dataclass
class EmbedResult:
    shards: list[Path]  #: every shard table the pool's embeddings live in (inherited included)
    gone: set[str]  #: keys in those shards that the pool no longer lists (``vanished``)
    counts: dict[str, int]
    seconds: float
    bad: list[dict[str, str]]  #: the first bad items: key, reason


def embed_pool(source: PoolSource, out_dir: str | Path, *, config: EmbedConfig,
               inherited: Sequence[Path] = (), workers: int = 2, on_bad_files: str = "warn",
               engine: str = "local", progress: Progress | None = None,
               engine_options: Mapping[str, Any] | None = None) -> EmbedResult:
    """Embed every key of ``source`` not already in ``inherited`` shards or finished shards of
    ``out_dir``; returns all shard tables of the pool and the counts of the run (the items of
    its earlier invocations included). ``engine_options`` go to the engine (the ray engine's
    ``block``: keys per Ray task)."""
    run = ENGINES.get(engine)
    options = _engine_options(engine, run.write, engine_options or {})
    bad = BadFiles(on_bad_files, what="unreadable pool item", keep=MAX_BAD_ITEMS,
                   fix="pass --on-bad-files skip (or warn) to skip unreadable items and count "
                       "them")
    t0 = time.perf_counter()
    writer = ShardedWriter(Path(out_dir) / "shards", config_fingerprint=fingerprint(asdict(config)))
    listed = [*inherited, *writer.shard_paths()]
    keys = Path(out_dir) / "keys"
    found, seen, pool = run.prepare(prepare, source, keys, listed, inherited, workers=workers)
    counts = found.counts
    bad.earlier(found.bad)
    if counts["vanished"]:
        log.warning("%d pool keys of earlier runs are gone (renamed, moved or deleted), e.g. %s; "
                    "their images are embedded again where they reappear under new keys",
                    counts["vanished"], min(found.vanished))
    for key, error in found.unlisted:
        counts["bad"] += 1
        bad.add(BadItem(key, error))
    ledger = Ledger(seen=seen, counts=counts, bad=bad, total=found.total, progress=progress)
    start = (max(writer.completed) + 1) if writer.completed else 0
    plan = ShardPlan(pool, config, writer, start, KeyFile(keys))
    run.write(plan, ledger, workers=workers, **options)
    bad.close()
    plan.keys.remove()  # each invocation writes its own
    damaged = set(listed) - set(found.earlier)
    shard_paths = [p for p in [*inherited, *writer.shard_paths()] if p not in damaged]
    return EmbedResult(shard_paths, found.vanished, counts,
                       time.perf_counter() - t0, [asdict(item) for item in bad.items])


def _engine_options(engine: str, run: Callable[..., None],
                    options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` checked against what ``engine`` takes: an unknown one is a one-line error."""
    known = [p for p in inspect.signature(run).parameters
             if p not in ("plan", "ledger", "workers")]
    wrong = sorted(set(options) - set(known))
    if wrong:
        raise OmniferError(f"the {engine} engine has no option {', '.join(map(repr, wrong))}; "
                           f"its options are: {', '.join(known) or 'none'}")
    return dict(options)
