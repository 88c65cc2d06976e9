"""Mining a pool: pick the pool faces whose labeled neighbours agree on one class, at per-class
thresholds calibrated on the labeled faces (cross-fitted, with a finite-sample precision
guarantee), with out-of-distribution rejection, near-duplicate clusters, a leak guard and, for
approximate indexes, a recall estimate against exact mining.

``mine`` works on embeddings only (the caller embeds the labeled and evaluation images with the
model that built the pool index); ``omnifer.mining.output`` turns its result into the sample
table the trainer reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from omnifer.config import StageConfig
from omnifer.device import parse_device
from omnifer.errors import OmniferError
from omnifer.mining.calibration import Calibration, class_thresholds
from omnifer.mining.crossfit import cross_fit
from omnifer.mining.duplicates import duplicate_clusters
from omnifer.mining.engine import SCORES, Evidence, evidence, near_duplicates, select
from omnifer.mining.leaks import HASH_BYTES, nearest
from omnifer.mining.ood import kth_similarity, ood_cut
from omnifer.mining.priors import pool_priors, shift_weights

SEARCHES = ("auto", "exact", "index")


@dataclass(frozen=True)
class MineConfig(StageConfig):
    """What decides a mined set (CLI flags and ``--config`` files fill the same fields)."""

    section: ClassVar[str] = "mine"

    #: cosine the mined class's evidence must reach; under the calibrated per-class
    #: thresholds of target_precision, a floor (None: no floor)
    threshold: float | None = 0.9
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
    #: per-class thresholds whose calibrated precision reaches this (None, as in runs of
    #: older versions: no calibration)
    target_precision: float | None = 0.95
    calibrate: bool = True  #: False: the threshold alone, one for every class
    confidence: float = 0.9  #: probability that the calibrated precision bound holds
    folds: int = 5  #: cross-fitting folds of the labeled faces (calibration)
    #: share of labeled faces whose own k-th-neighbour cosine, feature norm and weakest
    #: activation region (``omnifer.mining.occlusion``) a pool face must reach (0: off)
    ood_quantile: float = 0.1
    #: cosine at which mined faces count as near duplicates of each other (None: off)
    duplicate_threshold: float | None = 0.97
    classes: tuple[str, ...] | None = None  #: mine only these classes (None: all)
    search: str = "auto"  #: auto (exact on a flat index), exact, or index
    recall_sample: int = 20_000  #: pool rows mined both ways to estimate an index's recall
    #: drop mined faces whose epistemic uncertainty (/ log C) is above this (None: off)
    max_uncertainty: float | None = None
    mc_passes: int = 20  #: dropout passes scoring a single model's uncertainty
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        def bad(name: str, value: Any, want: str) -> OmniferError:
            return OmniferError(f"{name} is {value!r}; {want}")

        for name, example in (("threshold", 0.9), ("margin", 0.05), ("balance", 3),
                              ("leak_threshold", 0.98), ("target_precision", 0.95),
                              ("confidence", 0.9), ("ood_quantile", 0.1),
                              ("duplicate_threshold", 0.97)):
            value = getattr(self, name)
            if value is not None and not np.isfinite(value):
                raise bad(name, value, f"use a finite number, e.g. {example}")
        if self.threshold is None and not self.calibrating:
            raise OmniferError("give --threshold (e.g. 0.9) or --target-precision (e.g. 0.95)")
        parse_device(self.device)
        for name in ("threshold", "leak_threshold", "duplicate_threshold"):
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
        if self.target_precision is not None and not 0.0 < self.target_precision < 1.0:
            raise bad("target_precision", self.target_precision,
                      "use a value in (0, 1), e.g. 0.95 (--no-calibrate: one threshold)")
        if not 0.0 < self.confidence < 1.0:
            raise bad("confidence", self.confidence, "use a probability in (0, 1), e.g. 0.9")
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2:
            raise bad("folds", self.folds, "use at least 2 cross-fitting folds, e.g. 5")
        if not 0.0 <= self.ood_quantile < 1.0:
            raise bad("ood_quantile", self.ood_quantile, "use a share in [0, 1), e.g. 0.1")
        if self.classes is not None:
            if isinstance(self.classes, str) or not self.classes:
                raise bad("classes", self.classes, "name at least one class, e.g. neutral,anger")
            object.__setattr__(self, "classes", tuple(self.classes))
        if not isinstance(self.calibrate, bool):
            raise bad("calibrate", self.calibrate, "use true or false")
        bits = HASH_BYTES * 8
        distance = self.leak_hash_distance
        if distance is not None and (isinstance(distance, bool) or not isinstance(distance, int)
                                     or not 0 <= distance <= bits):
            raise bad("leak_hash_distance", self.leak_hash_distance,
                      f"use a number of bits in [0, {bits}], e.g. 96")
        if self.search not in SEARCHES:
            raise bad("search", self.search, f"use one of {', '.join(SEARCHES)}")
        if self.max_uncertainty is not None and not 0.0 < self.max_uncertainty <= 1.0:
            raise bad("max_uncertainty", self.max_uncertainty,
                      "use a value in (0, 1] (epistemic uncertainty / log C), e.g. 0.1")
        if (isinstance(self.mc_passes, bool) or not isinstance(self.mc_passes, int)
                or self.mc_passes < 1):
            raise bad("mc_passes", self.mc_passes, "use at least 1 dropout pass, e.g. 20")


    @property
    def calibrating(self) -> bool:
        """Whether the thresholds are calibrated per class to ``target_precision``."""
        return self.calibrate and self.target_precision is not None


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
    left_out: list[str | None]  #: per class, why it was not mined (None: it was)
    calibration: Calibration
    estimate: dict[str, Any]  #: calibration precision/coverage at ``thresholds``
    duplicate_of: np.ndarray  #: int64 pool row of each mined face's cluster head (-1: itself)
    ood_cut: float  #: k-th-neighbour cosine below which pool faces were rejected
    norm_cut: float  #: feature norm below which pool faces were rejected (-inf: not checked)
    candidate_norms: np.ndarray | None  #: float [len(evidence.rows)] (None: not known)
    counts: dict[str, int]
    evidence: Evidence  #: every candidate (scores of all classes), for the report
    excluded: np.ndarray  #: bool [n] pool rows too close to an evaluation image
    recall: dict[str, Any] | None = None  #: approximate search against exact, on a sample
    search: str = "exact"
    notes: list[str] = field(default_factory=list)
    #: the occlusion check, for the report: the labeled faces' and the checked mined faces'
    #: weakest-region scores and the cut (``omnifer.mining.occlusion``; None: not run)
    occlusion: tuple[np.ndarray, np.ndarray, float] | None = None


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
    if config is None:
        return
    unknown = [c for c in config.classes or () if c not in classes]
    if unknown:
        raise OmniferError(f"class {unknown[0]!r} (of --classes) is not in the labeled set; use "
                           f"some of {', '.join(classes)}")
    left = len(labels) - -(-len(labels) // config.folds)  # reference of the largest fold
    if config.k > left:
        raise OmniferError(
            f"k is {config.k} but the labeled set has {len(labels)} faces, about {left} in the "
            f"reference of each of the {config.folds} calibration folds; use --k {left} or "
            "less (e.g. 10), or add labeled faces")


def calibrate(labeled: np.ndarray, labels: np.ndarray, n_classes: int,
              config: MineConfig, norms: np.ndarray | None = None) -> Calibration:
    """Every labeled face mined against the other cross-fitting folds (``norms``: their
    feature norms)."""
    ev, _ = cross_fit(labeled, labels, n_classes, k=config.k, score=config.score,
                      prototypes=config.prototypes, folds=config.folds, seed=config.seed,
                      device=config.device)
    return Calibration.from_evidence(ev, labels[ev.rows], margin=config.margin,
                                     min_votes=config.min_votes, prototypes=config.prototypes,
                                     confidence=config.confidence, norms=norms)


def thresholds_for(cal: Calibration, classes: Sequence[str], config: MineConfig,
                   ) -> tuple[np.ndarray, list[str | None], list[str]]:
    """Per-class thresholds (``inf``: not mined), why each class left out was, and notes on
    the classes mined without the precision bound."""
    n = len(classes)
    weak: list[str | None] = [None] * n
    if config.calibrating:
        thresholds, why, weak = class_thresholds(cal, config.target_precision, n,
                                                 floor=config.threshold)
    else:
        thresholds, why = np.full(n, float(config.threshold)), [None] * n
    for c, name in enumerate(classes):
        if config.classes is not None and name not in config.classes:
            thresholds[c], why[c], weak[c] = np.inf, "not among --classes", None
    return thresholds, why, [f"{name}: {w}" for name, w in zip(classes, weak) if w]


def mine(pool: np.ndarray, labeled: np.ndarray, labels: np.ndarray, *, classes: Sequence[str],
         config: MineConfig, index: Any = None, approximate: bool = False,
         exclude: np.ndarray | None = None, exclude_hashes: np.ndarray | None = None,
         pool_hashes: Callable[[np.ndarray], np.ndarray] | None = None,
         pool_norms: np.ndarray | None = None, labeled_norms: np.ndarray | None = None,
         progress: Any = None, checkpoint: Any = None) -> MineResult:
    """Mine ``pool`` (embeddings [n, D]) with the labeled embeddings and their classes.

    ``index`` is the pool's FAISS index; with ``approximate`` (not a flat index) and search
    auto or index, candidates come from it and are then scored exactly; otherwise every pool
    row is scored. ``exclude``: embeddings of evaluation images whose near duplicates
    (cosine >= ``config.leak_threshold``) are never mined. ``exclude_hashes``: perceptual hashes
    (``omnifer.mining.leaks``) of evaluation images; with ``pool_hashes`` (pool rows -> their
    hashes, asked only for the rows that would be mined), pool faces within
    ``config.leak_hash_distance`` bits of one are never mined either. ``pool_norms`` and
    ``labeled_norms``: the feature norms of the pool and labeled faces (``Embedder.features``);
    with both, pool faces whose norm is below the ``config.ood_quantile`` of the labeled
    faces' are out of distribution too (``omnifer.mining.ood``). ``checkpoint``: a
    folder where the pool pass saves its finished spans, so that an interrupted mining goes on
    where it stopped (``engine.evidence``).
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
    for name, norms, n in (("pool", pool_norms, len(pool)), ("labeled", labeled_norms,
                                                            len(labeled))):
        if norms is not None and len(norms) != n:
            raise OmniferError(f"{len(norms)} {name} feature norms for {n} {name} embeddings; "
                               "give one per face (Embedder.features) or none")
    norms_known = pool_norms is not None and labeled_norms is not None
    cal = calibrate(labeled, labels, n_classes, config,
                    norms=labeled_norms if norms_known else None)
    cut = ood_cut(cal.kth, config.ood_quantile)
    norm_cut = ood_cut(cal.norm, config.ood_quantile)
    # calibration faces like the ones the pool keeps
    cal.eligible &= cal.kth >= cut
    if cal.norm is not None:
        cal.eligible &= cal.norm >= norm_cut
    # rows whose best cosine is below the floor cannot pass (for vote only when the floor is
    # >= 0): they are dropped right after the matrix product
    floor = -1.0 if config.threshold is None or config.threshold < 0 else config.threshold
    use_index = index is not None and (config.search == "index" or
                                       (config.search == "auto" and approximate))
    knobs = dict(k=config.k, score=config.score, prototypes=config.prototypes,
                 device=config.device, checkpoint=checkpoint)
    if use_index:
        from omnifer.mining.engine import candidates_from_index, class_prototypes

        queries = class_prototypes(labeled, labels, n_classes) if config.prototypes else labeled
        rows = candidates_from_index(index, queries, floor, device=config.device)
        ev = evidence(pool, labeled, labels, n_classes, floor=floor, rows=rows,
                      progress=progress, **knobs)
    else:
        ev = evidence(pool, labeled, labels, n_classes, floor=floor, progress=progress, **knobs)
    candidate_norms = np.asarray(pool_norms, np.float32)[ev.rows] if norms_known else None
    weak = np.zeros(len(ev.rows), bool) if candidate_norms is None else candidate_norms < norm_cut
    far = kth_similarity(ev.neighbour_scores) < cut
    typical = ~far & ~weak
    if config.calibrating:  # calibrate at the pool's class balance
        among = cal.eligible & (cal.nearest >= floor)
        cal.priors = pool_priors(cal.best[among], cal.truth[among], ev.best[typical], n_classes)
        cal.weight = shift_weights(cal.truth, cal.priors, n_classes, among)
    thresholds, why, notes = thresholds_for(cal, classes, config)
    passed = _select(ev, thresholds, config)
    ood = passed & ~typical
    leaked = passed & ~ood & excluded[ev.rows]
    copies = _hash_copies(ev.rows, passed & ~ood & ~leaked, exclude_hashes, pool_hashes, config)
    leaked |= copies
    keep = np.flatnonzero(passed & ~ood & ~leaked)
    best = ev.best[keep]
    score = ev.scores[keep, best]
    head = duplicate_clusters(pool[ev.rows[keep]], best, ev.neighbours[keep, 0], score,
                              config.duplicate_threshold)
    at, head = _cap(best, score, head, config, n_classes)
    keep, best = keep[at], best[at]
    recall = None
    if use_index:
        recall = _recall(pool, labeled, labels, n_classes, ev.rows[passed], thresholds, config)
    merged = int((head != np.arange(len(keep))).sum())
    counts = {"pool": len(pool), "candidates": len(ev.rows), "passed": int(passed.sum()),
              "ood_rejected": int(ood.sum()), "ood_far_from_labeled": int((ood & far).sum()),
              "ood_low_feature_norm": int((ood & weak).sum()),
              "leak_excluded": int(leaked.sum()), "leak_excluded_hash": int(copies.sum()),
              "leak_near_duplicates": int(excluded.sum()),
              "capped": int(passed.sum() - ood.sum() - leaked.sum() - len(keep)),
              "duplicates_merged": merged, "mined": len(keep)}
    counts.update({f"mined_{c}": int((best == i).sum()) for i, c in enumerate(classes)})
    rows = ev.rows[keep]
    return MineResult(
        rows=rows, labels=best, scores=ev.scores[keep, best],
        margins=ev.margin[keep], votes=ev.votes[keep, best], neighbours=ev.neighbours[keep],
        neighbour_scores=ev.neighbour_scores[keep], thresholds=thresholds, left_out=why,
        calibration=cal, estimate=cal.estimate(thresholds),
        duplicate_of=np.where(head == np.arange(len(keep)), -1, rows[head]), ood_cut=cut,
        norm_cut=norm_cut, candidate_norms=candidate_norms, counts=counts, evidence=ev,
        excluded=excluded, recall=recall, search="index" if use_index else "exact", notes=notes)


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


def _cap(best: np.ndarray, score: np.ndarray, head: np.ndarray, config: MineConfig,
         n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Order by class then score (best first) and apply --per-class-max and --balance, a
    cluster of near duplicates counting once (its members stay or go with its head). Returns
    the positions kept, in that order, and each one's head as a position in that output."""
    order = np.lexsort((-score, best))
    is_head = head == np.arange(len(best))
    clusters = np.bincount(best[is_head], minlength=n_classes)
    cap = np.full(n_classes, np.iinfo(np.int64).max)
    if config.per_class_max is not None:
        cap[:] = config.per_class_max
    if config.balance is not None and (clusters > 0).any():
        cap = np.minimum(cap, int(np.floor(config.balance * clusters[clusters > 0].min())))
    heads = order[is_head[order]]  # by class then score
    rank = np.zeros(len(best), np.int64)
    rank[heads] = np.arange(len(heads)) - np.searchsorted(best[heads], best[heads])
    at = order[rank[head[order]] < cap[best[order]]]
    where = np.full(len(best), -1, np.int64)
    where[at] = np.arange(len(at))
    return at, where[head[at]]


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
