"""The driver's account of an embedding run: duplicates, counts, unreadable items, progress.

Every engine settles the chunks of a run here, one chunk at a time and in pool-key order, so
that which face rows are ``ok`` and which are ``duplicate`` (an image whose bytes an earlier
key already had, in this shard, an earlier shard or an earlier run) and every count come out
the same whichever engine read and embedded them. The ledger holds only keys and content ids,
never crops or embeddings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omnifer.data.badfiles import BadFiles
from omnifer.pools.content_ids import ContentIds

Progress = Callable[[int, int], None]


#: Unreadable items kept (key and reason) for the run's manifest; the count is always exact.
MAX_BAD_ITEMS = 1000


@dataclass(frozen=True)
class BadItem:
    """A pool item that could not be read or decoded."""

    key: str
    reason: str | None

    def __str__(self) -> str:
        return f"pool item {self.key}: {self.reason}"


class Ledger:
    """Duplicates and counts of one run, settled chunk by chunk in key order.

    ``seen`` holds the content ids already embedded under a current key (it grows as chunks
    are settled; the ray engine's ledger has an object reference to them instead, for its
    duplicate-check actor, and takes the settled counts with :meth:`add`); ``counts`` the run's
    counts so far (``items``, ``faces``, ``duplicates``,
    ``bad``, ``no_face``, ``reused``, ``vanished``); ``bad`` applies the bad-file policy;
    ``progress(done, total)`` is told how many of the pool's ``total`` keys are done.
    """

    def __init__(self, *, seen: ContentIds | Any, counts: dict[str, int], bad: BadFiles,
                 total: int, progress: Progress | None = None) -> None:
        self.seen, self.counts, self.bad = seen, counts, bad
        self.total, self.progress = total, progress
        self.earlier_items = counts["items"]  #: items of this run's earlier invocations

    def settle(self, rows: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> list[bool]:
        """Count one chunk (its crop ``rows`` and ``skipped`` items) and set each row's
        ``status``; returns, per row, whether its crop is embedded (``ok``) or left out as a
        duplicate. Raises under the ``error`` policy for a bad item."""
        for s in skipped:
            self.counts[s["status"]] += 1
            if s["status"] == "bad":
                self.bad.add(BadItem(s["key"], s["reason"]))
        keep = first_seen(rows, self.seen)
        self.counts["duplicates"] += keep.count(False)
        self.counts["faces"] += keep.count(True)
        self.counts["items"] += len({r["key"] for r in rows} | {s["key"] for s in skipped})
        return keep

    def add(self, counts: dict[str, int], bad: list[BadItem]) -> None:
        """Add what another ledger settled (the ray engine's duplicate check): its ``bad``
        items under this ledger's policy, then its ``counts``."""
        for item in bad:
            self.bad.add(item)
        for name, n in counts.items():
            self.counts[name] += n

    def report(self, items: int | None = None) -> None:
        """Tell ``progress`` that ``items`` keys of this run are done (earlier invocations
        included; default: every key settled so far), besides the reused ones."""
        if self.progress:
            done = self.counts["items"] if items is None else items
            self.progress(self.counts["reused"] + done, self.total)


def first_seen(rows: list[dict[str, Any]], seen: ContentIds) -> list[bool]:
    """Mark rows ok or duplicate (an image whose bytes an earlier key already had)."""
    owner: dict[str, str] = {}
    keep = []
    known = seen.known([r["id"] for r in rows])
    for r, held in zip(rows, known):
        first = not held and owner.setdefault(r["id"], r["key"]) == r["key"]
        r["status"] = "ok" if first else "duplicate"
        keep.append(first)
    seen.add_unseen(owner)  # each id checked above
    return keep
