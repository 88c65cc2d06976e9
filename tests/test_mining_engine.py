"""Mining engine: every scoring mode and the selection against a brute-force reference, the
candidate path through a FAISS index against the exact pass, near duplicates, errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from omnifer.errors import OmniferError
from omnifer.mining import engine
from omnifer.mining import (Evidence, candidates_from_index, class_prototypes, evidence,
                            near_duplicates, select)

C, D, K = 4, 16, 5
MODES = [("max", False), ("mean", False), ("vote", False), ("mean", True)]


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n_pool: int = 300, n_labeled: int = 60, seed: int = 0):
    """Labeled rows around C class centres; pool rows near one centre (60%), between two
    (15%, ambiguous) or anywhere (25%). The pool is float16."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((C, D)))

    def noise(n):
        return 0.6 * rng.standard_normal((n, D)) / np.sqrt(D)

    labels = np.arange(n_labeled) % C
    labeled = unit(centres[labels] + noise(n_labeled))
    kind = rng.choice(3, size=n_pool, p=[0.6, 0.15, 0.25])[:, None]
    one = centres[rng.integers(0, C, n_pool)]
    two = unit(one + centres[rng.integers(0, C, n_pool)])
    pool = np.where(kind == 0, one, np.where(kind == 1, two, rng.standard_normal((n_pool, D))))
    return unit(pool + noise(n_pool)).astype(np.float16), labeled, labels


def naive(pool, labeled, labels, n_classes, *, k, score, prototypes, floor):
    """Row by row from the full similarity matrix: rows, scores, votes, neighbours, scores."""
    x = pool.astype(np.float32)
    s = (x @ labeled.T).astype(np.float64)
    protos = np.stack([labeled[labels == c].astype(np.float64).mean(0) for c in range(n_classes)])
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    ps = x.astype(np.float64) @ protos.T
    out = []
    for p in range(len(x)):
        row = s[p]
        if (ps[p].max() if prototypes else row.max()) < floor:
            continue
        nb = sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]
        votes = [sum(labels[i] == c for i in nb) for c in range(n_classes)]
        if prototypes:
            e = list(ps[p])
        elif score == "max":
            e = [row[labels == c].max() for c in range(n_classes)]
        elif score == "mean":
            e = [np.mean(sorted(row[labels == c], reverse=True)[:k]) for c in range(n_classes)]
        else:
            e = [sum(row[i] for i in nb if labels[i] == c) / k for c in range(n_classes)]
        out.append((p, e, votes, nb, [row[i] for i in nb]))
    rows, e, v, nb, nbs = zip(*out)
    return np.array(rows), np.array(e), np.array(v), np.array(nb), np.array(nbs)


def naive_select(scores, votes, threshold, margin, min_votes):
    t = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (scores.shape[1],))
    keep = []
    for e, v in zip(scores, votes):
        best = max(range(len(e)), key=lambda c: (e[c], -c))
        second = max([e[c] for c in range(len(e)) if c != best], default=-np.inf)
        keep.append(e[best] >= t[best] and e[best] - second >= margin and v[best] >= min_votes)
    return np.array(keep)


def assert_same(ev: Evidence, ref) -> None:
    rows, scores, votes, nb, nbs = ref
    np.testing.assert_array_equal(ev.rows, rows)
    np.testing.assert_array_equal(ev.best, scores.argmax(1))
    np.testing.assert_array_equal(ev.votes, votes)
    np.testing.assert_array_equal(ev.neighbours, nb)
    np.testing.assert_allclose(ev.scores, scores, atol=1e-5)
    np.testing.assert_allclose(ev.neighbour_scores, nbs, atol=1e-5)
    assert ev.rows.dtype == np.int64 and ev.scores.dtype == np.float32
    assert ev.votes.dtype == np.int32 and ev.neighbours.dtype == np.int64


@pytest.mark.parametrize("score,prototypes", MODES)
def test_evidence_and_select_match_brute_force(score, prototypes):
    pool, labeled, labels = clustered()
    calls = []
    ev = evidence(pool, labeled, labels, C, k=K, score=score, prototypes=prototypes, floor=0.5,
                  block=64, device="cpu", progress=lambda done, total: calls.append((done, total)))
    ref = naive(pool, labeled, labels, C, k=K, score=score, prototypes=prototypes, floor=0.5)
    assert_same(ev, ref)
    assert 0 < len(ev) < len(pool)
    assert calls == [(64, 300), (128, 300), (192, 300), (256, 300), (300, 300)]

    per_class = np.array([0.8, 0.85, 0.88, 0.82])
    for threshold, margin, min_votes in [(0.85, 0.0, 1), (per_class, 0.05, 3), (0.75, 0.2, K)]:
        mask = select(ev, threshold=threshold, margin=margin, min_votes=min_votes)
        expected = naive_select(ref[1], ref[2], threshold, margin, min_votes)
        np.testing.assert_array_equal(mask, expected)
        assert 0 < mask.sum() < len(mask)


def test_ties_go_to_lower_labeled_index_and_lower_class():
    # one-hot vectors: every similarity is exactly 0, 1 or 1/sqrt(2), so ties are exact
    eye = np.eye(4, dtype=np.float32)
    labeled = eye[[0, 1, 0, 1, 2, 0, 1, 3]]
    labels = np.array([2, 1, 0, 0, 3, 1, 2, 3])
    pool = np.vstack([eye, unit(np.array([[1, 1, 0, 0], [0, 0, 1, 1]], np.float32))])
    for score, prototypes in MODES:
        ev = evidence(pool.astype(np.float16), labeled, labels, 4, k=3, score=score,
                      prototypes=prototypes, floor=-1.0, block=2, device="cpu")
        ref = naive(pool.astype(np.float16), labeled, labels, 4, k=3, score=score,
                    prototypes=prototypes, floor=-1.0)
        assert_same(ev, ref)
    ev = evidence(pool, labeled, labels, 4, k=3, score="max", device="cpu")
    assert ev.neighbours[0].tolist() == [0, 2, 5] and ev.best[0] == 0  # classes 0, 1, 2 tie


def test_memory_mapped_pool_gives_the_same_evidence(tmp_path):
    pool, labeled, labels = clustered()
    np.save(tmp_path / "pool.npy", pool)
    mapped = np.load(tmp_path / "pool.npy", mmap_mode="r")
    a = evidence(pool, labeled, labels, C, k=K, floor=0.5, block=50, device="cpu")
    b = evidence(mapped[10:], labeled, labels, C, k=K, floor=0.5, block=50, device="cpu")
    keep = a.rows >= 10
    np.testing.assert_array_equal(b.rows + 10, a.rows[keep])
    np.testing.assert_allclose(b.scores, a.scores[keep], atol=1e-6)  # blocks differ: BLAS rounds
    assert np.array_equal(np.asarray(mapped), pool)  # releasing pages lost nothing


def test_rows_restrict_the_pass():
    pool, labeled, labels = clustered()
    full = evidence(pool, labeled, labels, C, k=K, floor=0.5, device="cpu")
    some = evidence(pool, labeled, labels, C, k=K, floor=0.5, rows=np.array([299, 3, 0, 3, 150]),
                    block=2, device="cpu")
    expected = np.intersect1d(full.rows, [0, 3, 150, 299])
    np.testing.assert_array_equal(some.rows, expected)
    np.testing.assert_allclose(some.scores, full.scores[np.isin(full.rows, expected)], atol=1e-6)
    empty = evidence(pool, labeled, labels, C, k=K, floor=1.0, device="cpu")
    assert empty.scores.shape == (0, C) and empty.neighbours.shape == (0, K)
    assert select(empty, threshold=0.9).shape == (0,)


def test_torch_path_matches_numpy(monkeypatch):
    torch = pytest.importorskip("torch")
    pool, labeled, labels = clustered()
    cpu = evidence(pool, labeled, labels, C, k=K, score="vote", floor=0.5, device="cpu")
    ref = near_duplicates(pool, labeled, threshold=0.9, device="cpu")
    from omnifer.mining import blocks

    monkeypatch.setattr(engine, "make_scorer",
                        lambda columns, device: blocks.TorchScorer(columns, torch.device("cpu")))
    ev = evidence(pool, labeled, labels, C, k=K, score="vote", floor=0.5, block=64)
    np.testing.assert_array_equal(ev.rows, cpu.rows)
    np.testing.assert_array_equal(ev.neighbours, cpu.neighbours)
    np.testing.assert_allclose(ev.scores, cpu.scores, atol=1e-5)
    np.testing.assert_array_equal(near_duplicates(pool, labeled, threshold=0.9, block=64), ref)


@pytest.mark.parametrize("score,prototypes", [("mean", False), ("max", True)])
def test_candidates_from_flat_index_equal_the_exact_pass(score, prototypes):
    fi = pytest.importorskip("omnifer.pools.faiss_index")
    pytest.importorskip("faiss")
    pool, labeled, labels = clustered(n_pool=1000)
    index = fi.build_index(pool, factory="Flat", device="cpu")
    kw = dict(k=K, score=score, prototypes=prototypes, floor=0.7, device="cpu")
    exact = evidence(pool, labeled, labels, C, **kw)
    queries = class_prototypes(labeled, labels, C) if prototypes else labeled
    cand = candidates_from_index(index, queries, 0.7, device="cpu")
    assert cand.dtype == np.int64 and np.all(np.diff(cand) > 0)
    ev = evidence(pool, labeled, labels, C, rows=cand, **kw)
    np.testing.assert_array_equal(ev.rows, exact.rows)
    np.testing.assert_array_equal(select(ev, threshold=0.8, margin=0.02),
                                  select(exact, threshold=0.8, margin=0.02))


def test_knn_doubling_equals_range_search_and_warns_when_truncated(caplog):
    fi = pytest.importorskip("omnifer.pools.faiss_index")
    pytest.importorskip("faiss")
    pool, labeled, _ = clustered(n_pool=1000)
    index = fi.build_index(pool, factory="Flat", device="cpu")
    ranged = engine._range(index, labeled, 0.7, block=7)
    doubled = engine._knn_range(index, labeled, 0.7, k_start=2, max_k=index.ntotal, block=7)
    np.testing.assert_array_equal(doubled, ranged)
    with caplog.at_level(logging.WARNING, logger="omnifer.mining.engine"):
        cut = engine._knn_range(index, labeled, 0.7, k_start=2, max_k=8, block=7)
    assert set(cut) < set(ranged)
    assert "labeled queries have more than k=8 pool neighbours" in caplog.text


def test_ivf_candidates_recall():
    fi = pytest.importorskip("omnifer.pools.faiss_index")
    pytest.importorskip("faiss")
    pool, labeled, labels = clustered(n_pool=4000, seed=1)
    exact = evidence(pool, labeled, labels, C, k=K, floor=0.8, device="cpu")
    keep = exact.rows[select(exact, threshold=0.8)]
    index = fi.build_index(pool, factory="IVF16,Flat", device="cpu")
    cand = candidates_from_index(index, labeled, 0.8, params={"nprobe": 1}, device="cpu")
    ev = evidence(pool, labeled, labels, C, k=K, floor=0.8, rows=cand, device="cpu")
    found = ev.rows[select(ev, threshold=0.8)]
    recall = len(np.intersect1d(found, keep)) / len(keep)
    print(f"IVF16,Flat nprobe=1: recall of the selected set {recall:.3f} ({len(keep)} exact)")
    assert set(found) <= set(keep)
    assert 0.5 < recall <= 1.0


def test_near_duplicates_match_brute_force():
    rng = np.random.default_rng(3)
    reference = unit(rng.standard_normal((40, D)))
    pool = unit(rng.standard_normal((500, D)))
    pool[::7] = unit(reference[rng.integers(0, 40, len(pool[::7]))]
                     + 0.03 * rng.standard_normal((len(pool[::7]), D)))
    pool = pool.astype(np.float16)
    expected = (pool.astype(np.float32) @ reference.T).max(1) >= 0.98
    got = near_duplicates(pool, reference, threshold=0.98, block=64, device="cpu")
    np.testing.assert_array_equal(got, expected)
    assert 0 < got.sum() < len(pool)


def test_device_auto_matches_cpu():
    pool, labeled, labels = clustered()
    a = evidence(pool, labeled, labels, C, k=K, floor=0.5, device="cpu")
    b = evidence(pool, labeled, labels, C, k=K, floor=0.5, device="auto")
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


@pytest.mark.parametrize("change,needle", [
    (dict(labeled=np.ones((6, D + 1), np.float32)), "dimension 17"),
    (dict(labeled=np.zeros((0, D), np.float32), labels=np.zeros(0, int)), "empty"),
    (dict(labels=np.array([0, 1, 2, 3, 4, 0])), "label 4 of labeled row 4"),
    (dict(labels=np.array([0, 1, 3, 3, 0, 1])), "class 2 has no labeled row"),
    (dict(k=0), "k must be an integer >= 1"),
    (dict(k=7), "k=7 is larger than the labeled set"),
    (dict(score="median"), "max, mean, vote"),
    (dict(rows=np.array([5, 300])), "rows holds 300"),
    (dict(floor=float("nan")), "floor must be a number"),
    (dict(pool=np.where(np.arange(300)[:, None] == 137, np.nan, clustered()[0])),
     "pool row 137 holds NaN"),
])
def test_evidence_errors(change, needle):
    pool, labeled, _ = clustered()
    args = dict(pool=pool, labeled=labeled[:6], labels=np.array([0, 1, 2, 3, 0, 1]), k=2)
    args.update(change)
    with pytest.raises(OmniferError, match=needle) as info:
        evidence(args.pop("pool"), args.pop("labeled"), args.pop("labels"), C, device="cpu",
                 **args)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("change,needle", [
    (dict(threshold=1.5), r"threshold 1.5 \(class 0\) is outside \[-1, 1\]"),
    (dict(threshold=[0.9, 0.9, -2.0, 0.9]), r"threshold -2.0 \(class 2\)"),
    (dict(threshold=[0.9] * (C + 1)), "one number or 4"),
    (dict(threshold="high"), "one number or 4"),
    (dict(threshold=0.9, min_votes=-1), "min_votes must be an integer >= 0"),
])
def test_select_errors(change, needle):
    pool, labeled, labels = clustered()
    ev = evidence(pool, labeled, labels, C, k=K, device="cpu")
    with pytest.raises(OmniferError, match=needle) as info:
        select(ev, **change)
    assert "\n" not in str(info.value)
    with pytest.raises(OmniferError, match="outside"):
        near_duplicates(pool, labeled, threshold=2.0, device="cpu")
