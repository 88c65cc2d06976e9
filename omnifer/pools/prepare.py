"""Where an embedding run starts: what earlier shards hold for the pool, and the keys left.

:func:`prepare` lists the pool, reads the earlier shards' keys, ids and statuses, and writes
the keys still to embed to a :class:`~omnifer.pools.keyfile.KeyFile`; it hands back counts,
the content ids already embedded and the listed source. An engine runs it where it lists the
pool (the ray engine: in a Ray task, whose content ids and source go to the engine's actors
and tasks), so the process that coordinates the run does not hold the listing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omnifer.pools.content_ids import ContentIds
from omnifer.pools.keyfile import KeyFile
from omnifer.pools.ledger import MAX_BAD_ITEMS, BadItem
from omnifer.pools.shards import bad_items, readable_shards, shard_table_columns, status_counts
from omnifer.pools.source import PoolSource


@dataclass
class Prepared:
    """What :func:`prepare` found."""

    counts: dict[str, int]  #: what earlier invocations of the run wrote, ``reused``, ``vanished``
    total: int  #: keys the pool lists
    earlier: list[Path]  #: the listed shards that can be read
    vanished: set[str]  #: keys of earlier shards the pool no longer lists (usually none)
    unlisted: list[tuple[str, str | None]]  #: entries that could not become keys, and why
    bad: list[BadItem]  #: the first unreadable items of earlier invocations of the run


def prepare(source: PoolSource, folder: Path, listed: Sequence[Path],
            inherited: Sequence[Path]) -> tuple[Prepared, ContentIds, PoolSource]:
    """List ``source``, write the keys that ``listed`` shards do not hold yet to the key file
    in ``folder`` (in listing order), and count what those shards hold; returns what was
    found, the content ids embedded under a current key, and the listed source (its listing
    travels with it to the readers)."""
    keys = source.keys()
    current = set(keys)
    earlier = readable_shards(listed)
    done, seen, vanished = earlier_work(earlier, current)
    todo = len(KeyFile.write(folder, (k for k in keys if k not in done)))
    # a resumed run counts what its own earlier invocations wrote too; "reused" is what
    # earlier runs (inherited shards) held
    skip = set(inherited)
    own = [p for p in earlier if p not in skip]
    counts = status_counts(own, current)
    counts.update(reused=len(keys) - todo - counts["items"], vanished=len(vanished))
    unlisted = [(item.key, item.error) for item in source.unlisted()]
    bad = [BadItem(k, r) for k, r in bad_items(own, current, MAX_BAD_ITEMS)] \
        if counts["bad"] else []  # the shards are read again only when they hold any
    return Prepared(counts, len(keys), earlier, vanished, unlisted, bad), seen, source


def earlier_work(shards: Sequence[Path], current: set[str]
                 ) -> tuple[set[str], ContentIds, set[str]]:
    """What earlier shards already hold for the ``current`` keys: the keys done, the content
    ids embedded under a current key, and the earlier keys the pool no longer lists.

    A key recorded as a duplicate counts as done only while the image it duplicates is still
    embedded under a current key; otherwise it is embedded again."""
    rows = []
    for path in shards:
        cols = shard_table_columns(path, ["key", "id", "status"])
        rows += zip(cols["key"], cols["id"], cols["status"])
    seen = ContentIds(i for k, i, s in rows if s == "ok" and k in current)
    done = {k for k, i, s in rows if k in current and (s != "duplicate" or i in seen)}
    return done, seen, {k for k, _, _ in rows if k not in current}
