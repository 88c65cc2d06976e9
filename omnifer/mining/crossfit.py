"""Cross-fitted evidence for the labeled faces themselves: the labeled set is split into K
folds (stratified by class) and each fold is mined against the other K - 1, so every labeled
face gets the evidence a pool face like it would get, from a reference set it is not part of.

Mining calibrates its thresholds and its out-of-distribution cut on these rows; ``omnifer
audit`` reads label errors and outliers from them.
"""

from __future__ import annotations

import numpy as np

from omnifer.errors import OmniferError
from omnifer.mining.engine import Evidence, evidence

#: Folds of the cross-fit (each labeled face is scored against the other 80%).
FOLDS = 5


def assign_folds(labels: np.ndarray, n_classes: int, folds: int, seed: int) -> np.ndarray:
    """int [m]: the fold of each labeled row, classes spread evenly over the folds; -1 for the
    only face of a class (it always stays in the reference, which needs every class)."""
    if folds < 2:
        raise OmniferError(f"folds is {folds}; cross-fitting needs at least 2, e.g. {FOLDS}")
    rng = np.random.default_rng(seed)
    out = np.full(len(labels), -1, np.int64)
    start = 0
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            continue
        # consecutive classes continue the fold cycle, so small classes do not all land in fold 0
        out[rng.permutation(idx)] = (start + np.arange(len(idx))) % folds
        start += len(idx)
    return out


def cross_fit(labeled: np.ndarray, labels: np.ndarray, n_classes: int, *, k: int,
              score: str, prototypes: bool = False, folds: int = FOLDS, seed: int = 0,
              device: str = "auto") -> tuple[Evidence, np.ndarray]:
    """Evidence of every labeled row that has a fold (``Evidence.rows`` are labeled row
    indices, sorted) from the rows of the other folds, and the fold of each labeled row."""
    labels = np.asarray(labels, np.int64)
    fold = assign_folds(labels, n_classes, folds, seed)
    parts = []
    for f in range(folds):
        held = np.flatnonzero(fold == f)
        if not len(held):
            continue
        ref = fold != f
        if k > ref.sum():
            raise OmniferError(
                f"k is {k} but a cross-fitting fold leaves {int(ref.sum())} labeled faces as "
                f"reference; use --k {int(ref.sum())} or less, or add labeled faces")
        ev = evidence(labeled[held], labeled[ref], labels[ref], n_classes, k=k, score=score,
                      prototypes=prototypes, floor=-1.0, device=device)
        ref_rows = np.flatnonzero(ref)
        parts.append((held[ev.rows], ev.scores, ev.votes, ref_rows[ev.neighbours],
                      ev.neighbour_scores))
    if not parts:
        raise OmniferError("no class has two labeled faces, so none can be held out; add "
                           "labeled faces")
    rows, scores, votes, neighbours, neighbour_scores = (np.concatenate(p) for p in zip(*parts))
    order = np.argsort(rows, kind="stable")
    return Evidence(rows[order], scores[order], votes[order], neighbours[order],
                    neighbour_scores[order]), fold
