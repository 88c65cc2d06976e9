"""A compact set of content ids, for the duplicate check of an embedding run.

Every embedded image's content id (:func:`omnifer.artifacts.content_id`: 32 hex digits, a
128-bit hash) stays on the driver for the whole run, so that an image a later key repeats is
found. In a Python set of strings each id costs about 160 bytes (12.3 MiB for 80,000 ids,
measured with ``tracemalloc``); here the ids are two sorted ``uint64`` arrays (the high
and the low 64 bits), 16 bytes each, and only the last :data:`BUFFER` additions wait in a
small set before they are merged in. Membership is exact: the low half is compared wherever
the high half matches. Ids of another form (not 32 hex digits) are kept as they are.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np

BUFFER = 1 << 14  #: ids added since the last merge, at most


def _halves(cid: str) -> tuple[int, int] | None:
    if len(cid) != 32:
        return None
    try:
        return int(cid[:16], 16), int(cid[16:], 16)
    except ValueError:
        return None


class ContentIds:
    """``in``, ``known``, ``update``/``add_unseen`` and ``len`` of a set of content-id
    strings, in 16 bytes per id."""

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._hi = np.zeros(0, np.uint64)  #: sorted
        self._lo = np.zeros(0, np.uint64)  #: the low halves, in the order of ``_hi``
        self._recent: set[str] = set()
        self._other: set[str] = set()
        self.update(ids)

    def __contains__(self, cid: object) -> bool:
        return isinstance(cid, str) and bool(self.known([cid])[0])

    def __len__(self) -> int:
        return len(self._hi) + len(self._recent) + len(self._other)

    def known(self, ids: Sequence[str]) -> np.ndarray:
        """Per id of ``ids``, whether the set holds it (one search for all of them)."""
        out = np.fromiter((c in self._recent or c in self._other for c in ids), bool, len(ids))
        rows, halves = [], []
        for i, cid in enumerate(ids):
            h = None if out[i] else _halves(cid)
            if h is not None:
                rows.append(i)
                halves.append(h)
        if rows and len(self._hi):
            pairs = np.array(halves, dtype=np.uint64)
            start = np.searchsorted(self._hi, pairs[:, 0], "left")
            stop = np.searchsorted(self._hi, pairs[:, 0], "right")
            for i in np.flatnonzero(stop > start):  # the high half matches: compare the low
                out[rows[i]] = bool((self._lo[start[i]:stop[i]] == pairs[i, 1]).any())
        return out

    def update(self, ids: Iterable[str]) -> None:
        it = iter(ids)
        while chunk := list(dict.fromkeys(itertools.islice(it, BUFFER))):
            self.add_unseen([cid for cid, held in zip(chunk, self.known(chunk)) if not held])

    def add_unseen(self, ids: Iterable[str]) -> None:
        """Add distinct ids that :meth:`known` has just said the set does not hold (what
        :meth:`update` does after that check)."""
        for cid in ids:
            (self._recent if _halves(cid) is not None else self._other).add(cid)
        if len(self._recent) >= BUFFER:
            self._merge()

    def _merge(self) -> None:
        pairs = np.array([_halves(c) for c in self._recent], dtype=np.uint64).reshape(-1, 2)
        pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
        at = np.searchsorted(self._hi, pairs[:, 0])
        self._hi = np.insert(self._hi, at, pairs[:, 0])
        self._lo = np.insert(self._lo, at, pairs[:, 1])
        self._recent.clear()
