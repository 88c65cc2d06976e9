"""The ``recordio`` pool source: MXNet/InsightFace RecordIO (``train.rec`` + ``train.idx``).

The byte format itself is in :mod:`omnifer.pools.recordio`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from omnifer.errors import OmniferError, one_line
from omnifer.pools.recordio import RecordError, read_index, read_record, unpack_payload
from omnifer.pools.source import PoolItem, PoolSource, Scan, no_item, register_pool_source


def rec_pair(path: Path) -> tuple[Path, Path] | list[Path] | None:
    """``(rec, idx)`` for a .rec/.idx path or a folder; the candidate list when ambiguous."""
    if path.is_file():
        if path.suffix.lower() not in (".rec", ".idx"):
            return None
        rec, idx = path.with_suffix(".rec"), path.with_suffix(".idx")
        return (rec, idx) if rec.is_file() and idx.is_file() else None
    if (path / "train.rec").is_file() and (path / "train.idx").is_file():
        return path / "train.rec", path / "train.idx"
    recs = sorted(p for p in path.glob("*.rec") if p.with_suffix(".idx").is_file())
    if len(recs) == 1:
        return recs[0], recs[0].with_suffix(".idx")
    return recs or None


@register_pool_source("recordio")
class RecordioSource(PoolSource):
    """MXNet/InsightFace RecordIO (MS1MV2/MS1MV3 ``faces_emore``); keys ``rec:<index>``."""

    rule = "a .rec file with its .idx beside it, or a folder holding train.rec and train.idx"

    @classmethod
    def matches(cls, path: Path, scan: Scan) -> bool:
        return rec_pair(path) is not None

    def _open(self) -> None:
        pair = rec_pair(self.path)
        if isinstance(pair, list):
            raise OmniferError(
                f"{self.path} holds several RecordIO files ({', '.join(p.name for p in pair)}) "
                "and no train.rec; point to one .rec file"
            )
        if pair is None:
            raise OmniferError(
                f"{self.path} is not a RecordIO pool: the recordio source needs a .rec file with "
                "its .idx beside it (e.g. train.rec + train.idx), or a folder holding them"
            )
        self.rec, self.idx = pair
        self._index = np.zeros(0, dtype=np.int64)    # image record numbers, sorted
        self._offsets = np.zeros(0, dtype=np.int64)  # their byte offsets in the .rec

    def _list(self) -> list[str]:
        try:
            pairs = read_index(self.idx)
        except (ValueError, OSError) as exc:
            raise OmniferError(f"cannot read the RecordIO index {self.idx}: {one_line(exc)}; "
                               "rebuild the .idx from the .rec") from None
        table = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        index, offsets = table[:, 0], table[:, 1]
        if len(index) and index[0] == 0:
            count = self._meta_count(int(offsets[0]), len(index))
            if count is not None:
                keep = (index >= 1) & (index < count)
                index, offsets = index[keep], offsets[keep]
        self._index, self._offsets = index, offsets
        return [f"rec:{i}" for i in index.tolist()]

    def _meta_count(self, offset: int, records: int) -> int | None:
        """``labels[0]`` of record 0 when it is an InsightFace meta record, else ``None``."""
        try:
            flag, labels, image = unpack_payload(read_record(self._file(self.rec), offset))
        except (RecordError, OSError) as exc:
            raise OmniferError(f"cannot read record 0 of {self.rec} ({one_line(exc)}); the file "
                               "is damaged or not RecordIO") from None
        first = labels[0]
        if flag > 0 and not image and first == int(first) and 1 <= first <= records:
            return int(first)
        return None

    def read(self, keys: Sequence[str]) -> Iterator[PoolItem]:
        self._listed()
        for key in keys:
            prefix, _, number = str(key).partition(":")
            pos = -1
            if prefix == "rec" and number.isdigit():
                pos = int(np.searchsorted(self._index, int(number)))
                if pos >= len(self._index) or self._index[pos] != int(number):
                    pos = -1
            if pos < 0:
                yield PoolItem(key, None, f"{no_item(key)} (no image record of {self.rec.name})")
                continue
            try:
                _, _, image = unpack_payload(read_record(self._file(self.rec),
                                                         int(self._offsets[pos])))
            except (RecordError, OSError) as exc:
                yield PoolItem(key, None, one_line(exc))
                continue
            if not image:
                yield PoolItem(key, None, f"record {number} holds no image bytes")
                continue
            yield PoolItem(key, image)
