"""Near-duplicate clusters inside a mined set: pool faces whose embeddings are at least
``threshold`` cosine-similar (burst photos, re-uploads, consecutive video frames) form one
cluster, which counts once toward the per-class caps and the class balance.

Only faces mined as the same class are compared, and only faces that share their nearest
labeled face: two faces that similar have the same nearest labeled neighbour in practice, and
grouping by it keeps the work near-linear in the mined set (a pool of millions mines hundreds
of thousands of faces; comparing all pairs would take hours). Clusters are the connected
components of the "at least ``threshold``" graph.
"""

from __future__ import annotations

import numpy as np

#: Rows compared at a time inside one group (a 2048 x group score block).
_BLOCK = 2048


def duplicate_clusters(embeddings: np.ndarray, labels: np.ndarray, anchors: np.ndarray,
                       scores: np.ndarray, threshold: float | None) -> np.ndarray:
    """int64 [n]: for each mined face, the position of its cluster's representative (the face
    of the cluster with the highest ``scores``; ties: the lower position). A face that is no
    one's near duplicate is its own representative. ``anchors``: each face's nearest labeled
    row; ``threshold`` None: no clustering."""
    n = len(labels)
    parent = np.arange(n)
    if threshold is None or n < 2:
        return parent

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    order = np.lexsort((anchors, labels))
    key = np.stack([labels[order], anchors[order]], axis=1)
    starts = np.flatnonzero(np.r_[True, (key[1:] != key[:-1]).any(axis=1)])
    for a, b in zip(starts, np.r_[starts[1:], n]):
        if b - a < 2:
            continue
        group = order[a:b]
        x = np.asarray(embeddings[group], np.float32)
        for s in range(0, len(group), _BLOCK):
            sim = x[s:s + _BLOCK] @ x.T
            i, j = np.nonzero(sim >= threshold)
            i = i + s
            for u, v in zip(group[i[i < j]], group[j[i < j]]):
                ru, rv = root(int(u)), root(int(v))
                if ru != rv:
                    parent[max(ru, rv)] = min(ru, rv)
    roots = np.array([root(i) for i in range(n)])
    # representative: best score in each cluster (then the lower position)
    rank = np.lexsort((np.arange(n), -np.asarray(scores, np.float64), roots))
    first = np.r_[True, roots[rank][1:] != roots[rank][:-1]]
    rep_of_root = dict(zip(roots[rank][first].tolist(), rank[first].tolist()))
    return np.array([rep_of_root[r] for r in roots.tolist()], np.int64)
