"""The embedding run's compact set of content ids."""

import tracemalloc

import numpy as np

from omnifer.artifacts import content_id
from omnifer.pools import content_ids
from omnifer.pools.content_ids import ContentIds


def test_membership_and_length_match_a_python_set_across_merges(monkeypatch):
    monkeypatch.setattr(content_ids, "BUFFER", 7)
    rng = np.random.default_rng(0)
    ids = [content_id(bytes(rng.integers(0, 256, 8, dtype=np.uint8))) for _ in range(200)]
    twins = [i[:16] + format(int(i[16:], 16) ^ 1, "032x")[-16:] for i in ids[:20]]  # same high half
    odd = ["not-hex-at-all", "x" * 32, ""]
    got, want = ContentIds(ids[:50]), set(ids[:50])
    for chunk in (ids[50:120], ids[30:90], odd, ids[120:], ids[:10]):
        got.update(chunk)
        want.update(chunk)
        assert len(got) == len(want)
        for probe in ids + twins + odd + ["", "0" * 32]:
            assert (probe in got) == (probe in want), probe
    assert len(got._hi) >= 190 and np.all(np.diff(got._hi.astype(np.float64)) >= 0)
    assert not any(t in got for t in twins)


def test_ids_take_a_small_fraction_of_a_set_of_strings():
    n = 100_000
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    compact = ContentIds(content_id(i.to_bytes(4, "little")) for i in range(n))
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(compact) == n and content_id((n - 1).to_bytes(4, "little")) in compact
    assert used / n < 40  # bytes per id; a set of the strings takes about 120
