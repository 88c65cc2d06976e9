"""``--max-uncertainty``: mined faces the primitive model is unsure of, left out.

The caller scores each mined face's epistemic uncertainty (the members' disagreement, divided
by log C: ``omnifer.uncertainty``), from the members of an ensemble or the passes of
Monte-Carlo dropout; this module only decides with those values. A face is kept when its value
is at most ``max_uncertainty`` (a value that is not a number counts as above it). Pure numpy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from omnifer.errors import OmniferError
from omnifer.mining.mine import MineResult


def keep_mask(epistemic: np.ndarray, max_uncertainty: float) -> np.ndarray:
    """bool [n]: the faces whose epistemic uncertainty is at most ``max_uncertainty``, compared
    at the values' own float precision (a float32 0.1 is not above a cut of 0.1)."""
    values = np.asarray(epistemic)
    if values.dtype.kind != "f":
        values = values.astype(np.float64)
    if values.ndim != 1:
        raise OmniferError(f"epistemic uncertainty has shape {values.shape}; pass one value "
                           "per mined face")
    with np.errstate(invalid="ignore"):
        return values <= values.dtype.type(max_uncertainty)


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


def filter_result(result: MineResult, epistemic: np.ndarray, max_uncertainty: float, *,
                  classes: Sequence[str], how: str) -> tuple[MineResult, np.ndarray,
                                                             dict[str, Any]]:
    """``result`` without the faces above ``max_uncertainty``, the kept faces' values and the
    record of what was dropped (for the run's manifest). ``how`` names the scoring, e.g.
    "ensemble of 3 members"."""
    epistemic = np.asarray(epistemic, dtype=np.float32)
    if len(epistemic) != len(result.rows):
        raise OmniferError(f"{len(epistemic)} uncertainty values for {len(result.rows)} mined "
                           "faces; score every mined face")
    keep = keep_mask(epistemic, max_uncertainty)
    labels = result.labels[keep]
    duplicate_of = reheaded(result.rows, result.duplicate_of, keep)
    dropped = dropped_per_class(result.labels, keep, classes)
    n_dropped = int((~keep).sum())
    counts = {**result.counts, "mined": int(keep.sum()), "uncertainty_dropped": n_dropped,
              "duplicates_merged": int((duplicate_of >= 0).sum()),
              **{f"mined_{c}": int((labels == i).sum()) for i, c in enumerate(classes)}}
    note = (f"uncertainty: {n_dropped} of {len(keep)} mined faces dropped, their epistemic "
            f"uncertainty (/ log C, {how}) above {max_uncertainty:g}; the calibration estimate "
            "does not count this filter")
    filtered = dataclasses.replace(
        result, rows=result.rows[keep], labels=labels, scores=result.scores[keep],
        margins=result.margins[keep], votes=result.votes[keep],
        neighbours=result.neighbours[keep], neighbour_scores=result.neighbour_scores[keep],
        duplicate_of=duplicate_of, counts=counts, notes=[*result.notes, note])
    finite = epistemic[np.isfinite(epistemic)]
    record = {"max_uncertainty": float(max_uncertainty), "scored_with": how,
              "scored": len(keep), "dropped": n_dropped, "dropped_per_class": dropped,
              "epistemic_mean": float(finite.mean()) if len(finite) else None,
              "epistemic_max": float(finite.max()) if len(finite) else None}
    return filtered, epistemic[keep], record
