"""Label audit: the mining stage's neighbour machinery turned on the labeled data itself.

Works on embeddings only (the caller embeds the labeled faces, and the evaluation faces with
their mirror images, with one model). For every labeled face:

- **label issue**: the cross-fitted class evidence e_c (``omnifer.mining.crossfit``: each face
  is scored against the labeled faces of the other folds, never against itself; by default
  ``mean``: the mean cosine of the class's k nearest faces) gives the suggested label, the class
  with the most evidence, and the label-issue score, with ``label_score``:

  - ``margin`` (default): max over c != given of e_c, minus e_given (in cosine units for the
    ``mean`` and ``max`` evidence); > 0 means another class's faces are closer than the given
    class's;
  - ``confidence``: 1 - p_given, where p_c = max(e_c, 0) / sum_j max(e_j, 0) (cleanlab's
    self-confidence turned so that higher is worse; meant for the ``vote`` evidence, whose
    shares are neighbour shares).

  A face is flagged when its suggested label differs from the given one and its score reaches
  ``label_cut``.
- **outlier**: the cosine of its k-th nearest other labeled face (``omnifer.mining.ood``); it is
  an outlier below the ``outlier_quantile`` of those cosines over the labeled set, so that share
  is flagged by construction: it ranks the faces least like the rest.
- **near duplicate** of a face in another labeled database, or of an evaluation face or its
  mirror image: cosine >= ``duplicate_threshold``, or perceptual hashes
  (``omnifer.mining.leaks``) within ``hash_distance`` bits.

Faces without an expression label get outlier and duplicate checks only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from omnifer.config import StageConfig
from omnifer.device import parse_device
from omnifer.errors import OmniferError
from omnifer.mining.crossfit import assign_folds, cross_fit
from omnifer.mining.engine import SCORES, evidence
from omnifer.mining.leaks import HASH_BYTES, hamming, nearest_rows
from omnifer.mining.ood import kth_similarity, ood_cut

#: The label-issue scores ``AuditConfig.label_score`` knows.
LABEL_SCORES = ("margin", "confidence")


@dataclass(frozen=True)
class AuditConfig(StageConfig):
    """What decides an audit (CLI flags and ``--config`` files fill the same fields)."""

    section: ClassVar[str] = "audit"

    k: int = 20  #: labeled neighbours per face (per class for the mean evidence)
    score: str = "mean"  #: class evidence of the neighbours (as in mining)
    folds: int = 5  #: cross-fitting folds (each face scored against the other folds)
    label_score: str = "margin"  #: margin or confidence
    #: a face whose suggested label differs is flagged when its label-issue score reaches this
    label_cut: float = 0.15
    duplicate_threshold: float = 0.99  #: cosine at which two faces are near duplicates
    #: bits (of 576) within which perceptual hashes count as copies (None: no hash check)
    hash_distance: int | None = 64
    outlier_quantile: float = 0.01  #: share of the labeled faces flagged as outliers
    suspects: int = 48  #: faces on the contact sheet
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        def bad(name: str, want: str) -> OmniferError:
            return OmniferError(f"{name} is {getattr(self, name)!r}; {want}")

        for name in ("k", "folds", "suspects", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise bad(name, "use a whole number")
        if self.k < 1:
            raise bad("k", "use at least 1 neighbour, e.g. 10")
        if self.folds < 2:
            raise bad("folds", "cross-fitting needs at least 2 folds, e.g. 5")
        if self.suspects < 0:
            raise bad("suspects", "use 0 or more faces, e.g. 48")
        if self.score not in SCORES:
            raise bad("score", f"use one of {', '.join(SCORES)}")
        if self.label_score not in LABEL_SCORES:
            raise bad("label_score", f"use one of {', '.join(LABEL_SCORES)}")
        for name, low, high, example in (("label_cut", -1.0, 1.0, 0.0),
                                         ("duplicate_threshold", -1.0, 1.0, 0.99)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not low <= value <= high:
                raise bad(name, f"use a number in [{low:g}, {high:g}], e.g. {example}")
        q = self.outlier_quantile
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 <= q < 1.0:
            raise bad("outlier_quantile", "use a share in [0, 1), e.g. 0.01 (0: no outliers)")
        bits = HASH_BYTES * 8
        d = self.hash_distance
        if d is not None and (isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= bits):
            raise bad("hash_distance", f"use a number of bits in [0, {bits}], e.g. 64")
        parse_device(self.device)


@dataclass(frozen=True, eq=False)
class Matches:
    """For each face, its nearest face of a reference set, when that is a near duplicate."""

    of: np.ndarray  #: int64 [n] reference row, -1 where there is none
    cosine: np.ndarray  #: float32 [n] cosine with it (NaN: none)
    bits: np.ndarray  #: int64 [n] perceptual-hash distance to it (-1: none or no hashes)

    @property
    def found(self) -> np.ndarray:
        return self.of >= 0

    @classmethod
    def none(cls, n: int) -> Matches:
        """No near duplicate for any of ``n`` faces."""
        return cls(np.full(n, -1, np.int64), np.full(n, np.nan, np.float32),
                   np.full(n, -1, np.int64))


@dataclass(frozen=True, eq=False)
class AuditResult:
    """Per labeled face (rows of the input), plus the counts."""

    given: np.ndarray  #: int64 [n] the expression label (-1: none)
    suggested: np.ndarray  #: int64 [n] the class with the most cross-fitted evidence (-1: none)
    evidence: np.ndarray  #: float32 [n, C] cross-fitted e_c (NaN rows: not scored)
    label_score: np.ndarray  #: float32 [n] (NaN: not scored)
    label_issue: np.ndarray  #: bool [n]
    fold: np.ndarray  #: int64 [n] cross-fitting fold (-1: not scored)
    kth_similarity: np.ndarray  #: float32 [n] cosine of the k-th nearest other labeled face
    outlier_cut: float
    outlier: np.ndarray  #: bool [n]
    duplicates: Matches  #: rows of the same input, in another database
    test_duplicates: Matches  #: rows of the evaluation set
    counts: dict[str, int] = field(default_factory=dict)

    def evidence_of(self, classes: np.ndarray) -> np.ndarray:
        """float32 [n]: each face's evidence for ``classes`` [n] (NaN: not scored or -1)."""
        out = np.full(len(self.given), np.nan, np.float32)
        ok = np.asarray(classes) >= 0
        out[ok] = self.evidence[np.flatnonzero(ok), np.asarray(classes)[ok]]
        return out


def check_labels(labels: np.ndarray, n_classes: int, config: AuditConfig) -> None:
    """One-line errors for labels an audit cannot use: none, or too few for ``config.k``."""
    labels = np.asarray(labels, np.int64)
    have = labels[labels >= 0]
    if not len(have):
        raise OmniferError("the labeled data has no face with an expression label; the audit "
                           "needs expression labels (check --data)")
    fold = assign_folds(have, n_classes, config.folds, config.seed)
    if not (fold >= 0).any():
        raise OmniferError("no class has two labeled faces, so none can be held out; add "
                           "labeled faces")
    smallest = min(int((fold != f).sum()) for f in range(config.folds) if (fold == f).any())
    if config.k > smallest:
        raise OmniferError(f"k is {config.k} but a cross-fitting fold leaves {smallest} labeled "
                           f"faces as reference; use --k {smallest} or less, or add labeled faces")


def label_scores(scores: np.ndarray, given: np.ndarray, *, kind: str = "margin",
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Suggested class [r] (ties: lower class) and label-issue score [r] from the class
    evidence ``scores`` [r, C] and the given labels [r] (see the module doc)."""
    if kind not in LABEL_SCORES:
        raise OmniferError(f"label_score is {kind!r}; use one of {', '.join(LABEL_SCORES)}")
    e = np.asarray(scores, np.float64)
    given = np.asarray(given, np.int64)
    rows = np.arange(len(given))
    if kind == "margin":
        others = e.copy()
        others[rows, given] = -np.inf
        score = others.max(axis=1) - e[rows, given]
    else:
        pos = np.maximum(e, 0.0)
        total = pos.sum(axis=1)
        share = np.where(total > 0, pos[rows, given] / np.where(total > 0, total, 1.0),
                         1.0 / e.shape[1])
        score = 1.0 - share
    return np.argmax(e, axis=1), score.astype(np.float32)


def near_duplicate_matches(x: np.ndarray, reference: np.ndarray, *, threshold: float,
                           hashes: np.ndarray | None = None,
                           reference_hashes: np.ndarray | None = None,
                           hash_distance: int | None = None, device: str = "auto") -> Matches:
    """The nearest ``reference`` row of each row of ``x`` when it is a near duplicate: by
    cosine (>= ``threshold``) first, else by perceptual hash (<= ``hash_distance`` bits)."""
    x = np.asarray(x, np.float32)
    ref = np.asarray(reference, np.float32)
    of = np.full(len(x), -1, np.int64)
    if len(x) and len(ref):
        ev = evidence(x, ref, np.zeros(len(ref), np.int64), 1, k=1, score="max",
                      floor=threshold, device=device)
        of[ev.rows] = ev.neighbours[:, 0]
    use_hash = hashes is not None and reference_hashes is not None and hash_distance is not None
    if use_hash and len(x) and len(ref):
        bits, at = nearest_rows(hashes, reference_hashes)
        add = (of < 0) & (bits <= hash_distance)
        of[add] = at[add]
    found = of >= 0
    cosine = np.full(len(x), np.nan, np.float32)
    cosine[found] = np.einsum("ij,ij->i", x[found], ref[of[found]])
    pair = np.full(len(x), -1, np.int64)
    if use_hash:
        pair[found] = hamming(hashes[found], reference_hashes[of[found]])
    return Matches(of, cosine, pair)


def audit(embeddings: np.ndarray, labels: np.ndarray, databases: np.ndarray, *,
          n_classes: int, config: AuditConfig, test: np.ndarray | None = None,
          hashes: np.ndarray | None = None, test_hashes: np.ndarray | None = None,
          ) -> AuditResult:
    """Audit the labeled faces: ``embeddings`` [n, D] (L2-normalised), ``labels`` [n] (class
    index, -1 for none), ``databases`` [n] (the source of each face). ``test``: embeddings of
    evaluation faces (for the train/test duplicates; rows past ``n_test`` may be their mirror
    images: a match is reported modulo ``n_test`` by the caller); ``hashes`` / ``test_hashes``:
    their perceptual hashes, rows as the embeddings."""
    emb = np.asarray(embeddings, np.float32)
    labels = np.asarray(labels, np.int64)
    databases = np.asarray(databases)
    n = len(emb)
    if labels.shape != (n,) or databases.shape != (n,):
        raise OmniferError(f"labels and databases need one entry per embedding ({n}); got "
                           f"{labels.shape} and {databases.shape}")
    check_labels(labels, n_classes, config)
    knobs = dict(threshold=config.duplicate_threshold, hash_distance=config.hash_distance,
                 device=config.device)
    # label issues: classes present, renumbered so that every class has a reference row
    rows = np.flatnonzero(labels >= 0)
    present, compact = np.unique(labels[rows], return_inverse=True)
    ev, fold_c = cross_fit(emb[rows], compact, len(present), k=config.k, score=config.score,
                           folds=config.folds, seed=config.seed, device=config.device)
    best_c, score_c = label_scores(ev.scores, compact[ev.rows], kind=config.label_score)
    scored = rows[ev.rows]
    scores = np.full((n, n_classes), np.nan, np.float32)
    scores[scored[:, None], present[None, :]] = ev.scores
    suggested = np.full(n, -1, np.int64)
    suggested[scored] = present[best_c]
    label_score = np.full(n, np.nan, np.float32)
    label_score[scored] = score_c
    issue = np.zeros(n, bool)
    issue[scored] = (score_c >= config.label_cut) & (present[best_c] != labels[scored])
    fold = np.full(n, -1, np.int64)
    fold[rows] = fold_c
    # outliers: the k-th nearest other labeled face (k + 1 neighbours, the face itself dropped)
    k = min(config.k, n - 1)
    kth = np.full(n, np.nan, np.float32)
    cut = float("-inf")
    if k >= 1:
        near = evidence(emb, emb, np.zeros(n, np.int64), 1, k=k + 1, score="max", floor=-1.0,
                        device=config.device)
        own = near.neighbours == near.rows[:, None]
        keep = np.where(own.any(axis=1, keepdims=True), ~own, np.arange(k + 1) < k)
        kth[near.rows] = kth_similarity(near.neighbour_scores[keep].reshape(-1, k))
        cut = ood_cut(kth, config.outlier_quantile)
    outlier = kth < cut
    # near duplicates in another database
    dup = Matches.none(n)
    for name in np.unique(databases):
        inside = np.flatnonzero(databases == name)
        other = np.flatnonzero(databases != name)
        if not len(other):
            continue
        m = near_duplicate_matches(
            emb[inside], emb[other], hashes=None if hashes is None else hashes[inside],
            reference_hashes=None if hashes is None else hashes[other], **knobs)
        f = m.found
        dup.of[inside[f]] = other[m.of[f]]
        dup.cosine[inside[f]] = m.cosine[f]
        dup.bits[inside[f]] = m.bits[f]
    if test is not None and len(test):
        tdup = near_duplicate_matches(emb, test, hashes=hashes, reference_hashes=test_hashes,
                                      **knobs)
    else:
        tdup = Matches.none(n)
    counts = {"faces": n, "expression_labels": len(rows), "scored": len(scored),
              "label_issues": int(issue.sum()), "outliers": int(outlier.sum()),
              "duplicates": int(dup.found.sum()), "test_duplicates": int(tdup.found.sum())}
    return AuditResult(labels, suggested, scores, label_score, issue, fold, kth, cut, outlier,
                       dup, tdup, counts)


def suspects(result: AuditResult, limit: int) -> dict[str, np.ndarray]:
    """Row indices of the top suspects, worst first: ``label`` (flagged label issues, highest
    score first), ``duplicate`` (faces with a near duplicate, closest first) and ``outlier``
    (lowest k-th cosine). At most ``limit`` faces in all: duplicates and outliers get up to an
    eighth of the places each, label issues the rest; places a kind cannot fill go to the
    others."""
    issue = np.flatnonzero(result.label_issue)
    issue = issue[np.argsort(-result.label_score[issue], kind="stable")]
    dup = np.flatnonzero(result.duplicates.found | result.test_duplicates.found)
    cos = np.fmax(np.nan_to_num(result.duplicates.cosine, nan=-2.0),
                  np.nan_to_num(result.test_duplicates.cosine, nan=-2.0))
    dup = dup[np.argsort(-cos[dup], kind="stable")]
    odd = np.flatnonzero(result.outlier)
    odd = odd[np.argsort(result.kth_similarity[odd], kind="stable")]
    limit = max(int(limit), 0)
    n_dup, n_odd = min(len(dup), limit // 8), min(len(odd), limit // 8)
    n_issue = min(len(issue), limit - n_dup - n_odd)
    left = limit - n_issue - n_dup - n_odd
    n_dup += min(len(dup) - n_dup, left)
    n_odd += min(len(odd) - n_odd, limit - n_issue - n_dup - n_odd)
    return {"label": issue[:n_issue], "duplicate": dup[:n_dup], "outlier": odd[:n_odd]}
