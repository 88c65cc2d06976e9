"""Mined faces left out after mining by a check of their own (``--max-uncertainty``, the
occlusion check): the result without them, near-duplicate clusters led again, counts and
notes updated. Pure numpy."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from omnifer.mining.mine import MineResult


def dropped_per_class(labels: np.ndarray, keep: np.ndarray,
                      classes: Sequence[str]) -> dict[str, int]:
    """Faces left out per class name (every class, 0 included)."""
    counts = np.bincount(np.asarray(labels, np.int64)[~np.asarray(keep, bool)],
                         minlength=len(classes))
    return {name: int(n) for name, n in zip(classes, counts)}


def reheaded(rows: np.ndarray, duplicate_of: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``duplicate_of`` of the kept faces: a near-duplicate cluster whose head was left out is
    led by its first kept member (the best scored: faces are ordered by class then score),
    which becomes its own head (-1) and the head of the others."""
    keep = np.asarray(keep, bool)
    kept_rows = np.asarray(rows)[keep]
    heads = np.asarray(duplicate_of)[keep].copy()
    orphan = np.flatnonzero((heads >= 0) & ~np.isin(heads, kept_rows))
    if len(orphan):
        _, first, inverse = np.unique(heads[orphan], return_index=True, return_inverse=True)
        lead = kept_rows[orphan][first][inverse]
        heads[orphan] = np.where(lead == kept_rows[orphan], -1, lead)
    return heads


def without(result: MineResult, keep: np.ndarray, *, classes: Sequence[str], counter: str,
            note: str) -> MineResult:
    """``result`` with only the faces of ``keep`` (bool [len(result.rows)]); ``counter``: the
    count of faces left out, added to the counts; ``note``: said in the run's notes."""
    keep = np.asarray(keep, bool)
    labels = result.labels[keep]
    duplicate_of = reheaded(result.rows, result.duplicate_of, keep)
    counts = {**result.counts, "mined": int(keep.sum()), counter: int((~keep).sum()),
              "duplicates_merged": int((duplicate_of >= 0).sum()),
              **{f"mined_{c}": int((labels == i).sum()) for i, c in enumerate(classes)}}
    return dataclasses.replace(
        result, rows=result.rows[keep], labels=labels, scores=result.scores[keep],
        margins=result.margins[keep], votes=result.votes[keep],
        neighbours=result.neighbours[keep], neighbour_scores=result.neighbour_scores[keep],
        duplicate_of=duplicate_of, counts=counts, notes=[*result.notes, note])
