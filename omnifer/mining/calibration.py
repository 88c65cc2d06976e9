"""Calibration of the mining thresholds on the labeled faces, with a finite-sample guarantee.

Every labeled face is mined against the other cross-fitting folds (``omnifer.mining.crossfit``)
as if it were a pool face. For each class c, the faces mined as c are sorted by evidence, best
first; keeping the top n of them has n - e right and e wrong. The threshold of c is chosen the
Learn-then-Test way: ``GRID`` prefix sizes n, spaced geometrically from the fewest faces that
could show the target at all to all of them, are each tested with the Clopper-Pearson upper
confidence bound of the error share at level (1 - confidence) / GRID (Bonferroni), and the
largest prefix that passes gives the threshold. With probability at least ``confidence`` (over
the draw of the labeled faces), every passing prefix, so the chosen one too, has precision at
least the target, for faces drawn like the labeled ones. Pool faces that differ from them (other domains, blends, non-faces) are what the
out-of-distribution check (``omnifer.mining.ood``) is for.

Each calibration face carries a weight (``omnifer.mining.priors``: the pool's estimated share
of its class over the labeled set's), so precision is measured at the pool's class balance;
the bound then uses the weighted error share over the Kish effective number of faces,
(sum w)^2 / sum w^2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from omnifer.mining.engine import Evidence, select

#: Prefix sizes tested per class (the union bound spends 1 - confidence over them).
GRID = 20
#: Calibration faces at or above the floor a class needs to be mined at the floor when they
#: are too few for the bound but all the evidence they give meets the target.
MIN_FACES = 10


def error_bound(errors: np.ndarray, n: np.ndarray, confidence: float) -> np.ndarray:
    """Clopper-Pearson upper bound, at ``confidence``, of the error share of n faces of
    which ``errors`` are wrong (1 when n is 0)."""
    from scipy.stats import beta

    errors = np.asarray(errors, np.float64)
    n = np.asarray(n, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = beta.ppf(confidence, errors + 1, np.maximum(n - errors, 1e-12))
    return np.where((n <= 0) | (errors >= n), 1.0, bound)


def precision_interval(right: float, n: float, confidence: float,
                       ) -> tuple[float, float] | None:
    """Two-sided Clopper-Pearson interval of a precision, right of n (None without faces;
    both may be fractional: weighted counts)."""
    from scipy.stats import beta

    if n <= 0:
        return None
    tail = (1 - confidence) / 2
    low = 0.0 if right <= 0 else float(beta.ppf(tail, right, n - right + 1))
    high = 1.0 if right >= n else float(beta.ppf(1 - tail, right + 1, n - right))
    return low, high


def effective_count(w: np.ndarray) -> float:
    """Kish's effective number of faces of weights ``w``: (sum w)^2 / sum w^2."""
    w = np.asarray(w, np.float64)
    return float(w.sum() ** 2 / (w ** 2).sum()) if len(w) and (w > 0).any() else 0.0


def first_testable(target: float, confidence: float) -> int:
    """The fewest faces whose precision bound can reach ``target`` (all of them right)."""
    if target >= 1.0:
        return 1 << 62
    return max(1, math.ceil(math.log(1 - confidence) / math.log(target)))


@dataclass
class Calibration:
    """Labeled faces mined against the other cross-fitting folds."""

    truth: np.ndarray  #: int [h] true class of each calibration face
    best: np.ndarray  #: int [h] mined class
    score: np.ndarray  #: float [h] evidence of the mined class
    eligible: np.ndarray  #: bool [h] margin and votes pass (the threshold is not applied)
    kth: np.ndarray  #: float [h] cosine of the k-th labeled neighbour (out-of-distribution)
    nearest: np.ndarray  #: float [h] what the candidate floor applies to (the best cosine)
    confidence: float = 0.9
    weight: np.ndarray | None = None  #: float [h] prior-shift weight of each face (None: 1)
    priors: np.ndarray | None = None  #: float [C] the pool's estimated class shares
    norm: np.ndarray | None = None  #: float [h] feature norm (out-of-distribution; None: unknown)

    def weights(self) -> np.ndarray:
        return np.ones(len(self.truth)) if self.weight is None else self.weight

    @classmethod
    def from_evidence(cls, ev: Evidence, truth: np.ndarray, *, margin: float, min_votes: int,
                      prototypes: bool, confidence: float, norms: np.ndarray | None = None,
                      ) -> Calibration:
        """``norms``: the feature norm of every labeled face (``ev.rows`` index it)."""
        eligible = select(ev, threshold=-1.0, margin=margin, min_votes=min_votes)
        nearest = ev.best_score if prototypes else ev.neighbour_scores[:, 0]
        return cls(np.asarray(truth), ev.best, ev.best_score, eligible,
                   ev.neighbour_scores[:, -1].astype(np.float32), nearest, confidence,
                   norm=None if norms is None else np.asarray(norms, np.float32)[ev.rows])

    def kept(self, thresholds: np.ndarray) -> np.ndarray:
        return self.eligible & (self.score >= thresholds[self.best])

    def estimate(self, thresholds: np.ndarray) -> dict[str, Any]:
        """Precision (with its Clopper-Pearson interval) and coverage on the calibration
        faces, overall and per mined class."""
        kept = self.kept(thresholds)
        right = (self.best == self.truth).astype(np.float64)
        w = self.weights()

        def measure(sel: np.ndarray) -> dict[str, Any]:
            if not sel.any():
                return {"kept": 0, "precision": None, "interval": None}
            n = effective_count(w[sel])
            p = float((w[sel] * right[sel]).sum() / w[sel].sum())
            return {"kept": int(sel.sum()), "precision": p,
                    "interval": precision_interval(p * n, n, self.confidence)}

        per = {c: measure(kept & (self.best == c)) for c in range(len(thresholds))}
        return {"held_out": len(kept), **measure(kept),
                "coverage": float(kept.mean()) if len(kept) else 0.0,
                "confidence": self.confidence, "per_class": per,
                "pool_class_shares": None if self.priors is None else self.priors.tolist()}

    def curve(self, points: int = 200) -> dict[str, list[float]]:
        """Precision against coverage as one global threshold falls (best scores first)."""
        order = np.argsort(-self.score[self.eligible], kind="stable")
        right = (self.best == self.truth)[self.eligible][order]
        if not len(right):
            return {"threshold": [], "precision": [], "coverage": []}
        n = np.arange(1, len(right) + 1)
        at = np.unique(np.linspace(0, len(right) - 1, min(points, len(right))).astype(int))
        return {"threshold": self.score[self.eligible][order][at].tolist(),
                "precision": (np.cumsum(right) / n)[at].tolist(),
                "coverage": (n / len(self.truth))[at].tolist()}


def test_sizes(count: int, target: float, confidence: float) -> np.ndarray:
    """The prefix sizes tested for a class of ``count`` calibration faces (may be empty)."""
    start = first_testable(target, 1 - (1 - confidence) / GRID)
    if count < start:
        return np.zeros(0, np.int64)
    return np.unique(np.geomspace(start, count, GRID).round().astype(np.int64))


def class_thresholds(cal: Calibration, target: float, n_classes: int, *, floor: float | None,
                     ) -> tuple[np.ndarray, list[str | None], list[str | None]]:
    """Per class, the lowest evidence threshold (at least ``floor``) whose calibration faces
    show precision >= ``target`` at ``cal.confidence`` (Learn-then-Test over ``GRID`` prefix
    sizes, see the module doc); why a class got none (``inf``; None for the others); and a
    caveat for a class mined at the floor without the bound: its calibration faces there
    (at least ``MIN_FACES``) were too few to show the target, but their precision meets it."""
    out = np.full(n_classes, np.inf)
    why: list[str | None] = [None] * n_classes
    weak: list[str | None] = [None] * n_classes
    level = 1 - (1 - cal.confidence) / GRID
    low = -np.inf if floor is None else floor
    for c in range(n_classes):
        sel = cal.eligible & (cal.best == c) & (cal.score >= low)
        order = np.argsort(-cal.score[sel], kind="stable")
        score = cal.score[sel][order]
        w = cal.weights()[sel][order]
        errors, count = _weighted_errors(w, cal.truth[sel][order] != c)
        sizes = test_sizes(len(score), target, cal.confidence)
        if not len(sizes):
            need = first_testable(target, level)
            seen = 1 - errors[-1] / count[-1] if len(score) and count[-1] > 0 else 0.0
            if len(score) >= MIN_FACES and seen >= target and np.isfinite(low):
                out[c] = low
                weak[c] = (f"mined at the floor without the precision bound: its {len(score)} "
                           f"calibration faces there are all it has (precision {seen:.3f}); "
                           f"the bound needs {need}")
            else:
                why[c] = (f"{len(score)} calibration faces are mined as it at or above the "
                          f"floor (precision {seen:.3f}); showing precision {target:g} at "
                          f"confidence {cal.confidence:g} needs at least {need}")
            continue
        bound = error_bound(errors[sizes - 1], count[sizes - 1], level)
        passed = sizes[bound <= 1 - target]
        if len(passed):
            out[c] = max(float(score[passed[-1] - 1]), low)
        elif count[-1] <= 0:
            why[c] = "the estimated class shares of the pool give it no faces"
        else:
            n = int(sizes[0])
            why[c] = (f"its calibration precision is {1 - errors[n - 1] / count[n - 1]:.3f} "
                      f"over its best {n} faces (at least {1 - bound[0]:.3f} at confidence "
                      f"{cal.confidence:g}), below the target {target:g}")
    return out, why, weak


def _weighted_errors(w: np.ndarray, wrong: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each prefix of the sorted faces: the weighted error count and the effective number
    of faces it stands for (both equal to the plain counts when every weight is 1)."""
    total, squares = np.cumsum(w), np.cumsum(w ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        count = np.where(squares > 0, total ** 2 / squares, 0.0)
        share = np.where(total > 0, np.cumsum(w * wrong) / total, 1.0)
    return share * count, count
