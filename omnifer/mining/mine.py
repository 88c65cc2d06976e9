"""Mining a pool: pick the pool faces whose labeled neighbours agree on one class, with a leak
guard, held-out calibration and, for approximate indexes, a recall estimate against exact
mining.

``mine`` works on embeddings only (the caller embeds the labeled and evaluation images with the
model that built the pool index); ``mined_table`` turns its result into the sample table the
trainer reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from omnifer.config import StageConfig
from omnifer.device import parse_device
from omnifer.errors import OmniferError
from omnifer.mining.engine import SCORES, Evidence, evidence, near_duplicates, select
from omnifer.mining.leaks import HASH_BYTES, nearest

SEARCHES = ("auto", "exact", "index")
#: Held-out predictions a per-class threshold must rest on before its precision counts.
MIN_SUPPORT = 10


@dataclass(frozen=True)
class MineConfig(StageConfig):
    """What decides a mined set (CLI flags and ``--config`` files fill the same fields)."""

    section: ClassVar[str] = "mine"

    threshold: float | None = 0.9  #: cosine; with target_precision, a floor (None: no floor)
    margin: float = 0.0  #: best class evidence minus the second's
    k: int = 10
    score: str = "vote"
    prototypes: bool = False
    min_votes: int = 1
    per_class_max: int | None = None
    balance: float | None = None  #: cap each class at this ratio of the rarest mined class
    leak_threshold: float = 0.98
    #: bits (of 576) within which a pool face's perceptual hash counts as a copy of an
    #: evaluation image or its mirror (None: no hash check)
    leak_hash_distance: int | None = 96
    target_precision: float | None = None
    holdout: float = 0.2  #: labeled share mined as if unlabeled, for the precision estimate
    search: str = "auto"  #: auto (exact on a flat index), exact, or index
    recall_sample: int = 20_000  #: pool rows mined both ways to estimate an index's recall
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        def bad(name: str, value: Any, want: str) -> OmniferError:
            return OmniferError(f"{name} is {value!r}; {want}")

        for name, example in (("threshold", 0.9), ("margin", 0.05), ("balance", 3),
                              ("leak_threshold", 0.98), ("target_precision", 0.95),
                              ("holdout", 0.2)):
            value = getattr(self, name)
            if value is not None and not np.isfinite(value):
                raise bad(name, value, f"use a finite number, e.g. {example}")
        if self.threshold is None and self.target_precision is None:
            raise OmniferError("give --threshold (e.g. 0.9) or --target-precision (e.g. 0.95)")
        parse_device(self.device)
        for name in ("threshold", "leak_threshold"):
            value = getattr(self, name)
            if value is not None and not -1.0 <= value <= 1.0:
                raise bad(name, value, "cosine similarity lies in [-1, 1]; use e.g. "
                          f"{0.9 if name == 'threshold' else 0.98}")
        if not 0.0 <= self.margin <= 2.0:
            raise bad("margin", self.margin, "use a value in [0, 2], e.g. 0.05")
        if self.k < 1:
            raise bad("k", self.k, "use at least 1 neighbour")
        if self.score not in SCORES:
            raise bad("score", self.score, f"use one of {', '.join(SCORES)}")
        if not 0 <= self.min_votes <= self.k:
            raise bad("min_votes", self.min_votes, f"use a value in [0, k={self.k}]")
        if self.per_class_max is not None and self.per_class_max < 1:
            raise bad("per_class_max", self.per_class_max, "use at least 1")
        if self.balance is not None and self.balance < 1.0:
            raise bad("balance", self.balance, "a ratio to the rarest class is at least 1")
        if self.target_precision is not None and not 0.0 < self.target_precision <= 1.0:
            raise bad("target_precision", self.target_precision, "use a value in (0, 1]")
        if not 0.0 < self.holdout < 1.0:
            raise bad("holdout", self.holdout, "use a share in (0, 1), e.g. 0.2")
        bits = HASH_BYTES * 8
        distance = self.leak_hash_distance
        if distance is not None and (isinstance(distance, bool) or not isinstance(distance, int)
                                     or not 0 <= distance <= bits):
            raise bad("leak_hash_distance", self.leak_hash_distance,
                      f"use a number of bits in [0, {bits}], e.g. 96")
        if self.search not in SEARCHES:
            raise bad("search", self.search, f"use one of {', '.join(SEARCHES)}")


@dataclass
class Calibration:
    """Held-out labeled faces mined against the rest of the labeled set."""

    truth: np.ndarray  #: int [h] true class of each held-out face
    best: np.ndarray  #: int [h] mined class
    score: np.ndarray  #: float [h] evidence of the mined class
    eligible: np.ndarray  #: bool [h] margin and votes pass (the threshold is not applied)

    def kept(self, thresholds: np.ndarray) -> np.ndarray:
        return self.eligible & (self.score >= thresholds[self.best])

    def estimate(self, thresholds: np.ndarray) -> dict[str, Any]:
        """Precision and coverage on the held-out faces, overall and per mined class."""
        kept = self.kept(thresholds)
        right = kept & (self.best == self.truth)
        per = {}
        for c in range(len(thresholds)):
            sel = kept & (self.best == c)
            per[c] = {"kept": int(sel.sum()),
                      "precision": float(right[sel].mean()) if sel.any() else None}
        return {"held_out": len(kept), "kept": int(kept.sum()),
                "coverage": float(kept.mean()) if len(kept) else 0.0,
                "precision": float(right.sum() / kept.sum()) if kept.any() else None,
                "per_class": per}

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


@dataclass
class MineResult:
    rows: np.ndarray  #: int64 pool rows mined, by class then score
    labels: np.ndarray  #: int class of each mined row
    scores: np.ndarray
    margins: np.ndarray
    votes: np.ndarray  #: neighbours (of k) of the mined class
    neighbours: np.ndarray  #: int64 [r, k] labeled rows, nearest first
    neighbour_scores: np.ndarray
    thresholds: np.ndarray  #: float [C] (inf: class not mined)
    calibration: Calibration
    estimate: dict[str, Any]  #: held-out precision/coverage at ``thresholds``
    counts: dict[str, int]
    evidence: Evidence  #: every candidate (scores of all classes), for the report
    excluded: np.ndarray  #: bool [n] pool rows too close to an evaluation image
    recall: dict[str, Any] | None = None  #: approximate search against exact, on a sample
    search: str = "exact"
    notes: list[str] = field(default_factory=list)


def check_classes(labels: np.ndarray, classes: Sequence[str],
                  config: MineConfig | None = None) -> None:
    """Every class needs a labeled example: its evidence is undefined otherwise. With
    ``config``, its k must not exceed the labeled faces left after the calibration hold-out."""
    if len(labels) == 0:
        raise OmniferError("the labeled set has no face with an expression label; mining needs "
                           "labeled examples of every class (check --labeled)")
    counts = np.bincount(labels, minlength=len(classes))
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise OmniferError(
            f"class {empty[0]!r} has no labeled example{' (nor ' + ', '.join(map(repr, empty[1:])) + ')' if len(empty) > 1 else ''}; "
            "add labeled faces of it, or mine with a labeled set that covers every class"
        )
    if config is not None:
        left = len(labels) - sum(_held_count(int(n), config.holdout) for n in counts)
        if config.k > left:
            raise OmniferError(
                f"k is {config.k} but the labeled set has {len(labels)} faces, {left} after "
                f"holding out {config.holdout:g} of each class for calibration; use --k {left} "
                "or less (e.g. 10), or add labeled faces")


def _held_count(n: int, holdout: float) -> int:
    """Labeled faces held out for calibration from a class of ``n``: at least one stays."""
    return min(int(round(holdout * n)), n - 1) if n > 1 else 0


def calibrate(labeled: np.ndarray, labels: np.ndarray, n_classes: int, config: MineConfig,
              ) -> Calibration:
    """Hold out ``config.holdout`` of each class, mine it against the rest, exactly."""
    rng = np.random.default_rng(config.seed)
    held = np.zeros(len(labels), bool)
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)
        held[rng.choice(idx, size=_held_count(len(idx), config.holdout), replace=False)] = True
    ref = ~held
    ev = evidence(labeled[held], labeled[ref], labels[ref], n_classes, k=config.k,
                  score=config.score, prototypes=config.prototypes, floor=-1.0,
                  device=config.device)
    ok = select(ev, threshold=-1.0, margin=config.margin, min_votes=config.min_votes)
    return Calibration(labels[held][ev.rows], ev.best, ev.scores[np.arange(len(ev.rows)), ev.best],
                       ok)


def class_thresholds(cal: Calibration, target: float, n_classes: int, *,
                     floor: float | None) -> np.ndarray:
    """Per class, lower the threshold through the held-out faces mined as that class (best
    score first) and stop just before precision first falls below ``target`` (counted once
    ``MIN_SUPPORT`` faces are in); ``inf`` for a class that never reaches it."""
    out = np.full(n_classes, np.inf)
    for c in range(n_classes):
        sel = cal.eligible & (cal.best == c)
        order = np.argsort(-cal.score[sel], kind="stable")
        n = np.arange(1, sel.sum() + 1)
        precision = np.cumsum(cal.truth[sel][order] == c) / n
        below = np.flatnonzero((precision < target) & (n >= MIN_SUPPORT))
        stop = below[0] if len(below) else len(n)  # faces kept
        if stop >= MIN_SUPPORT:
            out[c] = cal.score[sel][order][stop - 1]
    return out if floor is None else np.maximum(out, floor)


def mine(pool: np.ndarray, labeled: np.ndarray, labels: np.ndarray, *, classes: Sequence[str],
         config: MineConfig, index: Any = None, approximate: bool = False,
         exclude: np.ndarray | None = None, exclude_hashes: np.ndarray | None = None,
         pool_hashes: Callable[[np.ndarray], np.ndarray] | None = None,
         progress: Any = None) -> MineResult:
    """Mine ``pool`` (embeddings [n, D]) with the labeled embeddings and their classes.

    ``index`` is the pool's FAISS index; with ``approximate`` (not a flat index) and search
    auto or index, candidates come from it and are then scored exactly; otherwise every pool
    row is scored. ``exclude``: embeddings of evaluation images whose near duplicates
    (cosine >= ``config.leak_threshold``) are never mined. ``exclude_hashes``: perceptual hashes
    (``omnifer.mining.leaks``) of evaluation images; with ``pool_hashes`` (pool rows -> their
    hashes, asked only for the rows that would be mined), pool faces within
    ``config.leak_hash_distance`` bits of one are never mined either.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = len(classes)
    check_classes(labels, classes, config)
    if pool.shape[1] != labeled.shape[1]:
        raise OmniferError(f"pool embeddings have dimension {pool.shape[1]} but labeled ones "
                           f"{labeled.shape[1]}; embed both with the model that built the index")
    excluded = np.zeros(len(pool), bool)
    if exclude is not None and len(exclude):
        excluded = near_duplicates(pool, exclude, threshold=config.leak_threshold,
                                   device=config.device)
    cal = calibrate(labeled, labels, n_classes, config)
    if config.target_precision is not None:
        thresholds = class_thresholds(cal, config.target_precision, n_classes,
                                      floor=config.threshold)
    else:
        thresholds = np.full(n_classes, float(config.threshold))
    finite = thresholds[np.isfinite(thresholds)]
    # rows whose best cosine is below the lowest threshold cannot pass (for vote only when that
    # threshold is >= 0): they are dropped right after the matrix product
    floor = float(finite.min()) if len(finite) else 1.0
    floor = floor if floor >= 0 else -1.0
    use_index = index is not None and (config.search == "index" or
                                       (config.search == "auto" and approximate))
    knobs = dict(k=config.k, score=config.score, prototypes=config.prototypes,
                 device=config.device)
    if use_index:
        from omnifer.mining.engine import candidates_from_index, class_prototypes

        queries = class_prototypes(labeled, labels, n_classes) if config.prototypes else labeled
        rows = candidates_from_index(index, queries, floor, device=config.device)
        ev = evidence(pool, labeled, labels, n_classes, floor=floor, rows=rows,
                      progress=progress, **knobs)
    else:
        ev = evidence(pool, labeled, labels, n_classes, floor=floor, progress=progress, **knobs)
    passed = _select(ev, thresholds, config)
    leaked = passed & excluded[ev.rows]
    copies = _hash_copies(ev.rows, passed & ~leaked, exclude_hashes, pool_hashes, config)
    leaked |= copies
    keep = np.flatnonzero(passed & ~leaked)
    keep = _cap(keep, ev.best[keep], ev.scores[keep, ev.best[keep]], config, n_classes)
    best = ev.best[keep]
    recall = None
    if use_index:
        recall = _recall(pool, labeled, labels, n_classes, ev.rows[passed], thresholds, config)
    counts = {"pool": len(pool), "candidates": len(ev.rows), "passed": int(passed.sum()),
              "leak_excluded": int(leaked.sum()), "leak_excluded_hash": int(copies.sum()),
              "leak_near_duplicates": int(excluded.sum()),
              "capped": int(passed.sum() - leaked.sum() - len(keep)), "mined": len(keep)}
    counts.update({f"mined_{c}": int((best == i).sum()) for i, c in enumerate(classes)})
    return MineResult(
        rows=ev.rows[keep], labels=best, scores=ev.scores[keep, best],
        margins=ev.margin[keep], votes=ev.votes[keep, best], neighbours=ev.neighbours[keep],
        neighbour_scores=ev.neighbour_scores[keep], thresholds=thresholds, calibration=cal,
        estimate=cal.estimate(thresholds), counts=counts, evidence=ev, excluded=excluded,
        recall=recall, search="index" if use_index else "exact")


def _hash_copies(rows: np.ndarray, check: np.ndarray, reference: np.ndarray | None,
                 pool_hashes: Callable[[np.ndarray], np.ndarray] | None,
                 config: MineConfig) -> np.ndarray:
    """bool [r]: the ``check`` rows whose perceptual hash is within
    ``config.leak_hash_distance`` bits of a ``reference`` hash."""
    out = np.zeros(len(rows), bool)
    if (reference is None or not len(reference) or pool_hashes is None
            or config.leak_hash_distance is None or not check.any()):
        return out
    at = np.flatnonzero(check)
    out[at] = nearest(pool_hashes(rows[at]), reference) <= config.leak_hash_distance
    return out


def _select(ev: Evidence, thresholds: np.ndarray, config: MineConfig) -> np.ndarray:
    """``select`` with classes whose threshold is ``inf`` (never precise enough) left out."""
    finite = np.isfinite(thresholds)
    passed = select(ev, threshold=np.where(finite, thresholds, 1.0), margin=config.margin,
                    min_votes=config.min_votes)
    return passed & finite[ev.best]


def _cap(keep: np.ndarray, best: np.ndarray, score: np.ndarray, config: MineConfig,
         n_classes: int) -> np.ndarray:
    """Order by class then score (best first) and apply --per-class-max and --balance."""
    order = np.lexsort((-score, best))
    keep, best = keep[order], best[order]
    counts = np.bincount(best, minlength=n_classes)
    cap = np.full(n_classes, np.iinfo(np.int64).max)
    if config.per_class_max is not None:
        cap[:] = config.per_class_max
    if config.balance is not None and (counts > 0).any():
        cap = np.minimum(cap, int(np.floor(config.balance * counts[counts > 0].min())))
    rank = np.arange(len(best)) - np.searchsorted(best, best)  # position within its class
    return keep[rank < cap[best]]


def _recall(pool: np.ndarray, labeled: np.ndarray, labels: np.ndarray, n_classes: int,
            found: np.ndarray, thresholds: np.ndarray, config: MineConfig) -> dict[str, Any]:
    """Share of an exact mining's selection (on a random sample of pool rows) that the index
    search also selected."""
    rng = np.random.default_rng(config.seed)
    size = min(config.recall_sample, len(pool))
    sample = np.sort(rng.choice(len(pool), size=size, replace=False))
    ev = evidence(pool, labeled, labels, n_classes, k=config.k, score=config.score,
                  prototypes=config.prototypes, floor=-1.0, rows=sample, device=config.device)
    exact = ev.rows[_select(ev, thresholds, config)]
    hit = np.isin(exact, found).sum()
    return {"sample": size, "exact_selected": len(exact),
            "recall": float(hit / len(exact)) if len(exact) else None}
