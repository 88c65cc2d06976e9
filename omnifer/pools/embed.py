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

An engine (:data:`ENGINES`: ``local`` or ``ray``) reads, embeds and writes the shards of the
run's :class:`~omnifer.pools.plan.ShardPlan`; duplicates and counts are settled in one
:class:`~omnifer.pools.ledger.Ledger` on the driver, so both engines write the same shards.
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
from omnifer.pools.content_ids import ContentIds
from omnifer.pools.embed_config import EmbedConfig
from omnifer.pools.engines import ENGINES
from omnifer.pools.ledger import BadItem, Ledger
from omnifer.pools.plan import ShardPlan
from omnifer.pools.shards import readable_shards, shard_table_columns, status_counts
from omnifer.pools.source import PoolSource

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
#: Unreadable items kept (key and reason) for the run's manifest; the count is always exact.
MAX_BAD_ITEMS = 1000

__all__ = ["MAX_BAD_ITEMS", "BadItem", "EmbedResult", "Progress", "embed_pool"]


@dataclass
class EmbedResult:
    shards: list[Path]  #: every shard table the pool's embeddings live in (inherited included)
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
    options = _engine_options(engine, run, engine_options or {})
    bad = BadFiles(on_bad_files, what="unreadable pool item", keep=MAX_BAD_ITEMS,
                   fix="pass --on-bad-files skip (or warn) to skip unreadable items and count "
                       "them")
    t0 = time.perf_counter()
    writer = ShardedWriter(Path(out_dir) / "shards", config_fingerprint=fingerprint(asdict(config)))
    keys = source.keys()
    listed = [*inherited, *writer.shard_paths()]
    earlier = readable_shards(listed)
    damaged = set(listed) - set(earlier)
    done, seen, vanished = _earlier_work(earlier, keys)
    todo = [k for k in keys if k not in done]
    start = (max(writer.completed) + 1) if writer.completed else 0
    shards = [todo[i:i + config.shard_size] for i in range(0, len(todo), config.shard_size)]
    # a resumed run counts what its own earlier invocations wrote too; "reused" is what
    # earlier runs (inherited shards) held
    counts = status_counts([p for p in earlier if p not in set(inherited)], set(keys))
    counts.update(reused=len(keys) - len(todo) - counts["items"], vanished=len(vanished))
    if vanished:
        log.warning("%d pool keys of earlier runs are gone (renamed, moved or deleted), e.g. %s; "
                    "their images are embedded again where they reappear under new keys",
                    len(vanished), min(vanished))
    for item in source.unlisted():
        counts["bad"] += 1
        bad.add(BadItem(item.key, item.error))
    ledger = Ledger(seen=seen, counts=counts, bad=bad, total=len(keys), progress=progress)
    run(ShardPlan(source, config, writer, start, shards), ledger, workers=workers, **options)
    bad.close()
    shard_paths = [p for p in [*inherited, *writer.shard_paths()] if p not in damaged]
    return EmbedResult(shard_paths, counts,
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


def _earlier_work(shards: Sequence[Path], keys: Sequence[str]
                  ) -> tuple[set[str], ContentIds, set[str]]:
    """What earlier shards already hold for the current ``keys``: the keys done, the content
    ids embedded under a current key, and the earlier keys the pool no longer lists.

    A key recorded as a duplicate counts as done only while the image it duplicates is still
    embedded under a current key; otherwise it is embedded again."""
    current = set(keys)
    rows = []
    for path in shards:
        cols = shard_table_columns(path, ["key", "id", "status"])
        rows += zip(cols["key"], cols["id"], cols["status"])
    seen = ContentIds(i for k, i, s in rows if s == "ok" and k in current)
    done = {k for k, i, s in rows if k in current and (s != "duplicate" or i in seen)}
    return done, seen, {k for k, _, _ in rows if k not in current}
