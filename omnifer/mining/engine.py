"""Similarity-mining engine: class evidence for pool faces from their labeled neighbours.

Inputs are L2-normalised embeddings: ``pool`` [n, D] (float16 or float32, possibly a
memory-mapped file of millions of rows), ``labeled`` [m, D], ``labels`` [m] in [0, C) and the
number of classes C. S[p, l] is the cosine of pool row p and labeled row l, their inner product
computed in float32. The spec:

- N(p): the k labeled rows with the largest S[p, :] (ties: lower labeled index first).
- score ``"max"``: e_c(p) = max of S[p, l] over the labeled rows l of class c.
- score ``"mean"``: e_c(p) = mean of the min(k, n_c) largest S[p, l] over the rows of class c.
- score ``"vote"``: e_c(p) = (1/k) * sum of S[p, l] over l in N(p) with label c (0 when none).
- ``prototypes=True`` (overrides score): e_c(p) = cosine of p with normalize(mean of the class-c
  labeled rows) (``class_prototypes``).
- votes_c(p) = number of rows of N(p) with label c (always reported, also with prototypes).
- best = argmax_c e_c (ties: lower c); second = max over c != best of e_c (-inf when C = 1);
  margin = e_best - second.
- selection (``select``): keep p iff e_best >= threshold[best], margin >= margin_min and
  votes_best >= min_votes; threshold is one float or one per class.
- candidate floor: for max/mean/vote, e_best <= rowmax_l S[p, l] when that is >= 0; with
  prototypes, e_best is the rowmax of the prototype scores. ``evidence`` scores only the rows
  whose rowmax reaches ``floor`` (one reduction after the matmul) and does the per-class
  top-k work for those alone, so the exact pass runs at matmul speed. With
  0 <= floor <= min(threshold) no row that ``select`` would keep is lost.

The pool is read in blocks of rows (one block's score matrix is about 64 MB), so memory does not
grow with n; pages of a memory-mapped pool are released from this process after each block.
``candidates_from_index`` finds the rows above the floor with the pool's FAISS index instead of
a full pass; ``evidence(rows=...)`` then scores just those, exactly. Matrix products run in
numpy float32 on the CPU, or in torch on CUDA when ``device`` resolves to a GPU; torch and faiss
load only inside the functions that use them.
"""

from __future__ import annotations

import hashlib
import logging
import numbers
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from omnifer.errors import OmniferError
from omnifer.mining.blocks import block_size, blocks, make_scorer

log = logging.getLogger(__name__)

#: The class-evidence scores ``evidence`` knows.
SCORES = ("max", "mean", "vote")
#: ``candidates_from_index`` searches this far below the floor, so that float rounding in FAISS
#: never drops a row the exact pass keeps; ``evidence(rows=...)`` then decides exactly.
FLOAT_SLACK = 1e-4
#: blocks per saved span of a pass with a checkpoint folder (and per progress report)
SPAN_BLOCKS = 16

Progress = Callable[[int, int], None]


@dataclass(frozen=True, eq=False)
class Evidence:
    """Class evidence for the candidate pool rows (rowmax >= floor), sorted by pool row."""

    rows: np.ndarray              #: int64 [r] pool row indices
    scores: np.ndarray            #: float32 [r, C] e_c
    votes: np.ndarray             #: int32 [r, C] labels counted over N(p)
    neighbours: np.ndarray        #: int64 [r, k] labeled row indices of N(p), best first
    neighbour_scores: np.ndarray  #: float32 [r, k] their cosines

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def best(self) -> np.ndarray:
        """int64 [r]: the class with the most evidence (ties: lower class)."""
        return np.argmax(self.scores, axis=1)

    @property
    def best_score(self) -> np.ndarray:
        """float32 [r]: e_best."""
        return np.take_along_axis(self.scores, self.best[:, None], 1)[:, 0]

    @property
    def second(self) -> np.ndarray:
        """float32 [r]: the largest e_c of the other classes (-inf with a single class)."""
        others = self.scores.copy()
        np.put_along_axis(others, self.best[:, None], -np.inf, 1)
        return others.max(axis=1, initial=-np.inf)

    @property
    def margin(self) -> np.ndarray:
        """float32 [r]: e_best - second."""
        return self.best_score - self.second


# ---------------------------------------------------------------- public functions

def class_prototypes(labeled: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """float32 [C, D]: normalize(mean of the class-c labeled rows) for each class c.

    Pass these as the queries of ``candidates_from_index`` when mining with prototypes.
    """
    return _Labeled(labeled, labels, n_classes).prototypes()


def evidence(pool: np.ndarray, labeled: np.ndarray, labels: np.ndarray, n_classes: int, *,
             k: int = 10, score: str = "mean", prototypes: bool = False, floor: float = 0.0,
             rows: np.ndarray | None = None, block: int | None = None, device: str = "auto",
             progress: Progress | None = None,
             checkpoint: str | os.PathLike | None = None) -> Evidence:
    """Class evidence of every pool row whose rowmax reaches ``floor`` (see the module doc).

    ``rows`` (pool row indices) restricts the pass to those rows, e.g. the output of
    ``candidates_from_index``; None scores all rows. ``block`` rows are scored at a time
    (default: a 64 MB score matrix, at least 256 rows); ``progress(done, total)`` is called
    after each block. ``device`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``. Pass
    ``floor = min(threshold)`` (>= 0) to lose no row that ``select`` would keep.
    ``checkpoint``: a folder where each span of ``SPAN_BLOCKS`` blocks is saved once scored
    (after that span's last ``progress`` call);
    a pass with the same arguments and folder loads those spans instead of scoring them again
    (``omnifer.mining.checkpoint``), so that an interrupted pass goes on where it stopped.
    """
    x = _check_pool(pool)
    lab = _Labeled(labeled, labels, n_classes, dim=x.shape[1])
    _check_int("k", k)
    if k > lab.m:
        raise OmniferError(f"k={k} is larger than the labeled set ({lab.m} rows); "
                           f"pass k <= {lab.m}")
    if score not in SCORES:
        raise OmniferError(f"score {score!r} is unknown; use one of {', '.join(SCORES)}")
    floor = _check_real("floor", floor)
    rows = _check_rows(rows, len(x))

    columns = lab.columns
    if prototypes:
        columns = np.concatenate([columns, lab.prototypes()])
    floor_cols = slice(lab.m, None) if prototypes else slice(0, lab.m)
    block = block_size(block, len(columns))
    scorer = make_scorer(columns, device)

    empty = (np.zeros(0, np.int64), np.zeros((0, lab.c), np.float32),
             np.zeros((0, lab.c), np.int32), np.zeros((0, k), np.int64),
             np.zeros((0, k), np.float32))
    total = len(x) if rows is None else len(rows)
    store = None
    if checkpoint is not None:
        from omnifer.mining.checkpoint import SpanStore

        store = SpanStore(checkpoint, {
            "pool": [len(x), x.shape[1]], "labeled": _digest(columns), "k": k, "score": score,
            "prototypes": prototypes, "floor": floor, "block": block,
            "rows": None if rows is None else _digest(rows)})
    parts = []
    for first in range(0, total, block * SPAN_BLOCKS):
        end = min(first + block * SPAN_BLOCKS, total)
        span = store.load(first) if store is not None else None
        if span is None:
            scored = []
            for ids, xb in blocks(x, rows, block, progress, span=(first, end)):
                keep = _kept(scorer.rowmax(xb, floor_cols), floor, ids)
                if len(keep):
                    scored.append((ids[keep],
                                   *_score_rows(scorer.take(keep), lab, k, score, prototypes)))
            span = tuple(np.concatenate(c) for c in zip(*scored)) if scored else empty
            if store is not None:
                store.save(first, span)
        elif progress is not None:
            progress(end, total)
        parts.append(span)
    return Evidence(*(np.concatenate(column) for column in zip(*parts))) if parts \
        else Evidence(*empty)


def select(ev: Evidence, *, threshold: float | np.ndarray, margin: float = 0.0,
           min_votes: int = 1) -> np.ndarray:
    """bool [r]: which rows of ``ev`` pass (e_best >= threshold[best], margin, votes_best)."""
    n_classes = ev.scores.shape[1]
    t = _check_threshold(threshold, n_classes)
    margin = _check_real("margin", margin)
    _check_int("min_votes", min_votes, low=0)
    best = ev.best
    votes = np.take_along_axis(ev.votes, best[:, None], 1)[:, 0]
    return (ev.best_score >= t[best]) & (ev.margin >= margin) & (votes >= min_votes)


def candidates_from_index(index: Any, labeled: np.ndarray, floor: float, *,
                          params: dict[str, int] | None = None, device: str = "auto",
                          k_start: int = 256, block: int = 4096) -> np.ndarray:
    """int64: sorted pool row ids whose similarity to at least one ``labeled`` row reaches
    ``floor``, found by searching the pool's FAISS ``index`` with each labeled row.

    With an exact (Flat) index these are the rows of the exact pass; the search runs
    ``FLOAT_SLACK`` below the floor and ``evidence(rows=...)`` decides exactly. CPU indexes use
    range search. GPU indexes (used when ``device`` resolves to a GPU) have none: their k-NN
    search starts at ``k_start`` neighbours and doubles k, up to ``GPU_MAX_K``, for the queries
    whose k-th neighbour still reaches the floor; queries truncated at ``GPU_MAX_K`` are
    counted in a warning. ``params`` (``nprobe``, ``efSearch``) hold for this call only.
    """
    from omnifer.device import faiss_gpus
    from omnifer.pools.faiss_index import (GPU_MAX_K, is_gpu_index, temporary_search_parameters,
                                           to_gpu)

    q = _check_matrix(labeled, "labeled", dim=index.d)
    radius = _check_real("floor", floor) - FLOAT_SLACK
    _check_int("k_start", k_start)
    _check_int("block", block)
    gpus = faiss_gpus(device)
    with temporary_search_parameters(index, params):
        runner = index if is_gpu_index(index) else to_gpu(index, gpus)
        if runner is not None:
            return _knn_range(runner, q, radius, k_start, GPU_MAX_K, block)
        try:
            return _range(index, q, radius, block)
        except RuntimeError:  # an index type without range search
            return _knn_range(index, q, radius, k_start, index.ntotal, block)


def near_duplicates(pool: np.ndarray, reference: np.ndarray, *, threshold: float = 0.98,
                    block: int | None = None, device: str = "auto",
                    progress: Progress | None = None) -> np.ndarray:
    """bool [n]: pool rows whose cosine with some ``reference`` row is >= ``threshold``."""
    x = _check_pool(pool)
    ref = _check_matrix(reference, "reference", dim=x.shape[1])
    threshold = _check_real("threshold", threshold)
    if not -1 <= threshold <= 1:
        raise OmniferError(f"threshold {threshold} is outside [-1, 1]; cosine thresholds lie in "
                           "[-1, 1], e.g. 0.98")
    block = block_size(block, len(ref))
    scorer = make_scorer(ref, device)
    out = np.zeros(len(x), dtype=bool)
    for ids, xb in blocks(x, None, block, progress):
        out[ids] = _kept(scorer.rowmax(xb, slice(None)), threshold, ids, mask=True)
    return out


# ---------------------------------------------------------------- labeled set

class _Labeled:
    """The labeled rows sorted by class (stable), so that class c owns a column range."""

    def __init__(self, labeled: np.ndarray, labels: np.ndarray, n_classes: int, *,
                 dim: int | None = None) -> None:
        x = _check_matrix(labeled, "labeled", dim=dim)
        _check_int("n_classes", n_classes)
        y = np.asarray(labels)
        if y.shape != (len(x),) or (y.size and y.dtype.kind not in "iu"):
            raise OmniferError(f"labels must be {len(x)} integers (one per labeled row), got "
                               f"shape {y.shape} dtype {y.dtype}; pass {len(x)} class indices")
        bad = (y < 0) | (y >= n_classes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise OmniferError(f"label {int(y[i])} of labeled row {i} is outside [0, {n_classes}); "
                               f"pass labels in 0..{n_classes - 1} or raise n_classes")
        counts = np.bincount(y, minlength=n_classes)
        if (counts == 0).any():
            c = int(np.flatnonzero(counts == 0)[0])
            raise OmniferError(f"class {c} has no labeled row; drop the class from the label "
                               "space or add labeled faces for it")
        self.ids = np.argsort(y, kind="stable").astype(np.int64)  # column -> labeled row index
        self.columns = np.ascontiguousarray(x[self.ids], dtype=np.float32)
        self.column_labels = y[self.ids].astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self.m, self.c = len(x), int(n_classes)

    def prototypes(self) -> np.ndarray:
        sums = np.add.reduceat(self.columns.astype(np.float64), self.offsets[:-1], axis=0)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        if (norms == 0).any():
            c = int(np.flatnonzero(norms[:, 0] == 0)[0])
            raise OmniferError(f"class {c}'s labeled rows average to the zero vector, so it has no "
                               "prototype; use prototypes=False")
        return (sums / norms).astype(np.float32)


def _score_rows(s: np.ndarray, lab: _Labeled, k: int, score: str,
                prototypes: bool) -> tuple[np.ndarray, ...]:
    """scores, votes, neighbours, neighbour_scores of rows whose scores against the class-sorted
    labeled columns (then the prototypes) are ``s``."""
    sl = s[:, :lab.m]
    col, top = _top_k(sl, lab.ids, k)
    onehot = lab.column_labels[col][:, :, None] == np.arange(lab.c)
    votes = onehot.sum(axis=1, dtype=np.int32)
    bounds = zip(lab.offsets[:-1], lab.offsets[1:])
    if prototypes:
        e = s[:, lab.m:]
    elif score == "max":
        e = np.maximum.reduceat(sl, lab.offsets[:-1], axis=1)
    elif score == "mean":
        e = np.stack([_mean_top(sl[:, a:b], k) for a, b in bounds], axis=1)
    else:
        e = (onehot * top[:, :, None]).sum(axis=1, dtype=np.float64) / k
    return e.astype(np.float32), votes, lab.ids[col], top


def _top_k(s: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns of the k largest entries of each row of ``s`` and their values, best first;
    ties go to the lower ``ids[column]``."""
    if k < s.shape[1]:
        col = np.argpartition(-s, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(s, col, 1).min(axis=1, keepdims=True)
        for i in np.flatnonzero((s >= kth).sum(axis=1) > k):  # a tie straddles the k-th place
            col[i] = np.lexsort((ids, -s[i]))[:k]
    else:
        col = np.tile(np.arange(s.shape[1]), (len(s), 1))
    top = np.take_along_axis(s, col, 1)
    order = np.lexsort((ids[col], -top), axis=1)
    return np.take_along_axis(col, order, 1), np.take_along_axis(top, order, 1)


def _mean_top(s: np.ndarray, k: int) -> np.ndarray:
    """Mean of the min(k, width) largest entries of each row."""
    if k < s.shape[1]:
        s = np.partition(s, s.shape[1] - k, axis=1)[:, -k:]
    return s.mean(axis=1, dtype=np.float64)


# ---------------------------------------------------------------- index search

def _range(index: Any, q: np.ndarray, radius: float, block: int) -> np.ndarray:
    found = [np.zeros(0, np.int64)]
    for start in range(0, len(q), block):
        _, _, ids = index.range_search(np.ascontiguousarray(q[start:start + block], np.float32),
                                       radius)
        found.append(np.unique(ids))
    return np.unique(np.concatenate(found)).astype(np.int64)


def _knn_range(index: Any, q: np.ndarray, radius: float, k_start: int, max_k: int,
               block: int) -> np.ndarray:
    """Range search by k-NN: double k for the queries whose k-th neighbour is still inside."""
    limit = min(max_k, index.ntotal)
    k = min(k_start, limit)
    found = [np.zeros(0, np.int64)]
    todo = np.arange(len(q))
    while len(todo):
        inside = []
        for start in range(0, len(todo), block):
            part = np.ascontiguousarray(q[todo[start:start + block]], np.float32)
            scores, ids = index.search(part, k)
            found.append(np.unique(ids[(scores >= radius) & (ids >= 0)]))
            inside.append(scores[:, -1] >= radius)
        todo = todo[np.concatenate(inside)]
        if k == limit:
            if len(todo) and limit < index.ntotal:
                log.warning("%d of %d labeled queries have more than k=%d pool neighbours above "
                            "the floor %.4f; their candidates are truncated (search a CPU index, "
                            "which has range search, or raise the floor)",
                            len(todo), len(q), limit, radius + FLOAT_SLACK)
            break
        k = min(2 * k, limit)
    return np.unique(np.concatenate(found)).astype(np.int64)


# ---------------------------------------------------------------- checks

def _digest(a: np.ndarray) -> str:
    """A short content hash of an array (what a checkpoint's spans were scored against)."""
    a = np.ascontiguousarray(a)
    return hashlib.blake2b(a.tobytes() + str((a.dtype, a.shape)).encode(),
                           digest_size=8).hexdigest()


def _check_matrix(x: Any, what: str, *, dim: int | None = None) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.dtype.kind != "f":
        raise OmniferError(f"{what} must be a 2-D float array (one embedding per row), got shape "
                           f"{x.shape} dtype {x.dtype}; pass an (n, dim) float32 array")
    if len(x) == 0:
        raise OmniferError(f"{what} is empty (shape {x.shape}); pass at least one embedding")
    if dim is not None and x.shape[1] != dim:
        raise OmniferError(f"{what} have dimension {x.shape[1]} but the pool has {dim}; embed "
                           "both with the same model")
    if not np.isfinite(x).all():
        row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise OmniferError(f"{what} row {row} holds NaN or infinite values; drop or re-embed it")
    return x


def _check_pool(pool: Any) -> np.ndarray:
    """Shape and dtype only: the pool may be huge; non-finite rows are caught block by block."""
    x = pool if isinstance(pool, np.ndarray) else np.asarray(pool)
    if x.ndim != 2 or x.dtype.kind != "f" or x.shape[1] == 0:
        raise OmniferError(f"pool must be a 2-D float array (one embedding per row), got shape "
                           f"{x.shape} dtype {x.dtype}; pass an (n, dim) float16/float32 array")
    return x


def _kept(rowmax: np.ndarray, floor: float, ids: np.ndarray, *, mask: bool = False) -> np.ndarray:
    """Positions (or a mask) of the block rows whose rowmax reaches ``floor``; a non-finite
    rowmax means the pool row holds NaN or infinite values."""
    bad = ~np.isfinite(rowmax)
    if bad.any():
        raise OmniferError(f"pool row {int(ids[bad.argmax()])} holds NaN or infinite values; "
                           "drop that row or embed it again")
    keep = rowmax >= floor
    return keep if mask else np.flatnonzero(keep)


def _check_rows(rows: Any, n: int) -> np.ndarray | None:
    if rows is None:
        return None
    r = np.asarray(rows)
    if r.ndim != 1 or (r.size and r.dtype.kind not in "iu"):
        raise OmniferError(f"rows must be a 1-D integer array of pool row indices, got shape "
                           f"{r.shape} dtype {r.dtype}; pass e.g. candidates_from_index(...)")
    r = np.unique(r).astype(np.int64)
    if r.size and (r[0] < 0 or r[-1] >= n):
        bad = r[0] if r[0] < 0 else r[-1]
        raise OmniferError(f"rows holds {bad}, outside the pool's {n} rows; pass indices in "
                           f"0..{n - 1}")
    return r


def _check_threshold(threshold: Any, n_classes: int) -> np.ndarray:
    """float64 [C] thresholds from one number or one per class, each in [-1, 1]."""
    try:
        t = None if isinstance(threshold, str) else np.asarray(threshold, dtype=np.float64)
    except (TypeError, ValueError):
        t = None
    if t is None or t.ndim > 1 or (t.ndim == 1 and len(t) != n_classes):
        shape = getattr(t, "shape", threshold)
        raise OmniferError(f"threshold must be one number or {n_classes} (one per class), got "
                           f"{shape}; pass e.g. threshold=0.9")
    t = np.broadcast_to(t, (n_classes,))
    bad = np.flatnonzero(~((t >= -1) & (t <= 1)))
    if len(bad):
        raise OmniferError(f"threshold {float(t[bad[0]])} (class {bad[0]}) is outside [-1, 1]; "
                           "cosine thresholds lie in [-1, 1], e.g. 0.9")
    return t


def _check_real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or np.isnan(value):
        raise OmniferError(f"{name} must be a number, got {value!r}; pass e.g. {name}=0.0")
    return float(value)


def _check_int(name: str, value: Any, *, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise OmniferError(f"{name} must be an integer >= {low}, got {value!r}; "
                           f"pass {name} >= {low}")
