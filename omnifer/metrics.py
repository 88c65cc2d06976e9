"""Evaluation metrics for expressions, valence/arousal and action units (numpy only).

Inputs are array-likes; results are Python floats or numpy arrays. Conventions:

* Expression labels are integer class indices in ``[0, n_classes)``.
* F1 follows scikit-learn's ``zero_division=0``: a class or AU with no true and no predicted
  positives scores 0. A class absent from both ``y_true`` and ``y_pred`` is NaN in
  ``f1_per_class`` and left out of ``macro_f1``; an AU with no labeled row is NaN in ``au_f1``.
* AU labels and predictions are 0/1 (or bool); a mask ``[N, A]`` says which cells are labeled.
* Calibration metrics take probabilities ``[N, C]`` and use the top-1 class and its probability.
"""

from __future__ import annotations

import numpy as np

from omnifer.errors import OmniferError

#: Weights of the ABAW expression score: 0.67 * macro-F1 + 0.33 * accuracy.
ABAW_EXPR_WEIGHTS: tuple[float, float] = (0.67, 0.33)

#: Default threshold grid for ``tune_thresholds``.
DEFAULT_THRESHOLDS = np.linspace(0.05, 0.95, 19)


# ---------------------------------------------------------------- validation helpers

def _same_shape(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape != b.shape:
        raise OmniferError(
            f"{names} have shapes {a.shape} and {b.shape}; pass arrays with one entry per sample"
        )


def _nonempty(a: np.ndarray, name: str) -> None:
    if a.size == 0:
        raise OmniferError(f"{name} is empty (shape {a.shape}); pass at least one sample")


def _labels(y: object, name: str, n_classes: int | None = None) -> np.ndarray:
    """``y`` as a 1-D int64 array of class indices, checked against ``[0, n_classes)``."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise OmniferError(f"{name} has shape {arr.shape}; pass a 1-D array of class indices")
    if arr.dtype.kind not in "iub":
        if arr.dtype.kind != "f" or not np.all(np.isfinite(arr) & (arr == np.round(arr))):
            raise OmniferError(
                f"{name} holds non-integer values (dtype {arr.dtype}); pass class indices"
            )
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or (n_classes is not None and arr.max() >= n_classes)):
        bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
        raise OmniferError(
            f"{name} holds class {bad}, outside [0, {n_classes}); "
            "map labels to canonical indices or raise n_classes"
        )
    return arr


def _n_classes(n_classes: int) -> int:
    if int(n_classes) < 1:
        raise OmniferError(f"n_classes is {n_classes}; pass a positive number of classes")
    return int(n_classes)


def _probs(probs: object, y: object, name: str = "probs") -> tuple[np.ndarray, np.ndarray]:
    """Probabilities ``[N, C]`` and labels ``[N]``, checked against each other."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise OmniferError(f"{name} has shape {p.shape}; pass class probabilities of shape [N, C]")
    _nonempty(p, name)
    labels = _labels(y, "y", p.shape[1])
    if labels.shape[0] != p.shape[0]:
        raise OmniferError(
            f"{name} has shape {p.shape} but y has shape {labels.shape}; pass one label per row"
        )
    return p, labels


def _binary(a: object, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype != bool and not np.all((arr == 0) | (arr == 1)):
        raise OmniferError(
            f"{name} holds values other than 0 and 1 (e.g. {arr[(arr != 0) & (arr != 1)].flat[0]}); "
            "threshold scores before computing F1"
        )
    return arr.astype(bool)


def _f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """``2TP / (2TP + FP + FN)``, 0 where the denominator is 0 (zero_division=0)."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.zeros_like(den), where=den > 0)


# ---------------------------------------------------------------- expressions

def accuracy(y_true: object, y_pred: object) -> float:
    """Fraction of samples whose predicted class equals the true class."""
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    _same_shape(t, p, "y_true and y_pred")
    _nonempty(t, "y_true")
    return float(np.mean(t == p))


def confusion_matrix(y_true: object, y_pred: object, n_classes: int) -> np.ndarray:
    """Counts ``[n_classes, n_classes]`` (int64): rows are true classes, columns predictions."""
    n = _n_classes(n_classes)
    t, p = _labels(y_true, "y_true", n), _labels(y_pred, "y_pred", n)
    _same_shape(t, p, "y_true and y_pred")
    return np.bincount(t * n + p, minlength=n * n).reshape(n, n).astype(np.int64)


def f1_per_class(y_true: object, y_pred: object, n_classes: int) -> np.ndarray:
    """One-vs-rest F1 per class ``[n_classes]``; NaN for a class in neither array."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    f1 = _f1_from_counts(tp, fp, fn)
    f1[(tp + fp + fn) == 0] = np.nan
    return f1


def macro_f1(y_true: object, y_pred: object, n_classes: int) -> float:
    """Mean F1 over the classes present in ``y_true`` or ``y_pred``.

    Equals scikit-learn's ``f1_score(average="macro")`` with the union of present labels.
    """
    f1 = f1_per_class(y_true, y_pred, n_classes)
    if np.all(np.isnan(f1)):
        raise OmniferError("y_true and y_pred are empty (shape (0,)); pass at least one sample")
    return float(np.nanmean(f1))


def abaw_expr_score(f1: float, acc: float) -> float:
    """ABAW expression challenge score: ``0.67 * macro_f1 + 0.33 * accuracy``."""
    w_f1, w_acc = ABAW_EXPR_WEIGHTS
    return float(w_f1 * f1 + w_acc * acc)


# ---------------------------------------------------------------- valence / arousal

def ccc(pred: object, target: object) -> float:
    """Concordance correlation coefficient with population (ddof=0) moments.

    ``2 cov / (var_p + var_t + (mean_p - mean_t)^2)``. When the denominator is 0 (both
    inputs constant and equal) the result is defined as 0.0, not 1.0, so that a constant
    predictor never scores well.
    """
    p = np.asarray(pred, dtype=np.float64).ravel()
    t = np.asarray(target, dtype=np.float64).ravel()
    _same_shape(np.asarray(pred), np.asarray(target), "pred and target")
    _nonempty(p, "pred")
    mp, mt = p.mean(), t.mean()
    cov = np.mean((p - mp) * (t - mt))
    den = p.var() + t.var() + (mp - mt) ** 2
    return float(2 * cov / den) if den > 0 else 0.0


# ---------------------------------------------------------------- action units

def binary_f1(y_true: object, y_pred: object) -> float:
    """F1 of 0/1 predictions; 0 when there are no true and no predicted positives."""
    t, p = _binary(y_true, "y_true"), _binary(y_pred, "y_pred")
    _same_shape(t, p, "y_true and y_pred")
    return float(_f1_from_counts(np.sum(t & p), np.sum(~t & p), np.sum(t & ~p)))


def _au_arrays(y_true: object, other: object, mask: object | None,
               other_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.asarray(y_true)
    o = np.asarray(other)
    if t.ndim != 2:
        raise OmniferError(f"y_true has shape {t.shape}; pass AU labels of shape [N, A]")
    _same_shape(t, o, f"y_true and {other_name}")
    m = np.ones(t.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    _same_shape(t, m, "y_true and mask")
    t = np.where(m, t, 0)
    return _binary(t, "y_true"), o, m


def au_f1(y_true: object, y_pred: object, mask: object | None = None) -> np.ndarray:
    """F1 per AU ``[A]`` over the labeled cells (``mask`` true; all cells when None).

    NaN for an AU with no labeled row; 0 for one with labels but no true and no predicted
    positives.
    """
    t, p, m = _au_arrays(y_true, y_pred, mask, "y_pred")
    p = _binary(np.where(m, p, 0), "y_pred")
    f1 = _f1_from_counts((t & p).sum(0), (~t & p).sum(0), (t & ~p).sum(0))
    f1[~m.any(axis=0)] = np.nan
    return f1


def tune_thresholds(y_true: object, probs: object, mask: object | None = None,
                    grid: object | None = None) -> np.ndarray:
    """Per AU, the threshold on ``grid`` that maximises F1 of ``probs >= threshold``.

    Only labeled cells count. Ties go to the threshold closest to 0.5 (then the lower one);
    an AU with no labeled row gets 0.5. ``grid`` defaults to 0.05, 0.10, ..., 0.95.
    """
    t, p, m = _au_arrays(y_true, probs, mask, "probs")
    p = p.astype(np.float64)
    g = DEFAULT_THRESHOLDS if grid is None else np.asarray(grid, dtype=np.float64).ravel()
    _nonempty(g, "grid")
    scores = np.empty((len(g), t.shape[1]))
    for i, thr in enumerate(g):
        pred = (p >= thr) & m
        scores[i] = _f1_from_counts((t & pred).sum(0), (~t & pred).sum(0), (t & ~pred).sum(0))
    # lexsort: last key is primary -> highest F1, then closest to 0.5, then lowest threshold
    out = np.full(t.shape[1], 0.5)
    for a in np.flatnonzero(m.any(axis=0)):
        best = np.lexsort((g, np.abs(g - 0.5), -scores[:, a]))[0]
        out[a] = g[best]
    return out


# ---------------------------------------------------------------- calibration

def softmax(logits: object, axis: int = -1, temperature: float = 1.0) -> np.ndarray:
    """Numerically stable softmax of ``logits / temperature`` along ``axis``."""
    if not temperature > 0:
        raise OmniferError(f"temperature is {temperature}; pass a positive temperature")
    z = np.asarray(logits)
    if z.dtype.kind != "f":
        z = z.astype(np.float64)
    z = z / temperature
    z = z - np.max(z, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


def nll(probs: object, y: object) -> float:
    """Mean negative log-likelihood of the true classes; probabilities clipped at 1e-12."""
    p, labels = _probs(probs, y)
    picked = p[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, None))))


def brier(probs: object, y: object) -> float:
    """Mean Brier score: squared distance between the probabilities and the one-hot truth,
    summed over classes (0 is perfect, 2 the worst)."""
    p, labels = _probs(probs, y)
    onehot = np.zeros_like(p, dtype=np.float64)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def reliability_bins(probs: object, y: object, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Top-1 confidence and accuracy in ``n_bins`` equal-width bins over (0, 1].

    Bin ``i`` holds confidences in ``(edges[i], edges[i+1]]`` (the first bin also takes 0).
    Returns ``confidence`` and ``accuracy`` (means per bin, NaN where empty), ``count``
    (int64) and ``edges`` (``n_bins + 1`` values).
    """
    if int(n_bins) < 1:
        raise OmniferError(f"n_bins is {n_bins}; pass a positive number of bins")
    p, labels = _probs(probs, y)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, int(n_bins) - 1)
    count = np.bincount(idx, minlength=int(n_bins)).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=int(n_bins)) / count
        mean_acc = np.bincount(idx, weights=correct, minlength=int(n_bins)) / count
    return {"confidence": mean_conf, "accuracy": mean_acc, "count": count, "edges": edges}


def ece(probs: object, y: object, n_bins: int = 15) -> float:
    """Expected calibration error (Guo et al., 2017) over ``n_bins`` equal-width bins.

    The mean of ``|accuracy - confidence|`` per bin, weighted by the bin's share of samples.
    """
    bins = reliability_bins(probs, y, n_bins)
    filled = bins["count"] > 0
    gap = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    weights = bins["count"][filled] / bins["count"].sum()
    return float(np.sum(weights * gap))


# ---------------------------------------------------------------- ranking

def auroc(scores: object, labels: object) -> float:
    """Area under the ROC curve from ranks (Mann-Whitney U), ties counted as one half.

    ``labels`` are 0/1 (1 = positive). NaN when either class is missing.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    lab = _binary(np.asarray(labels).ravel(), "labels")
    _same_shape(s, lab, "scores and labels")
    if not np.all(np.isfinite(s)):
        raise OmniferError("scores hold NaN or infinite values; drop or fill them first")
    n_pos = int(lab.sum())
    n_neg = lab.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts  # 0-based rank of each distinct value's first item
    avg_rank = starts + (counts + 1) / 2.0  # 1-based average rank within each tie group
    rank_sum = avg_rank[inverse.ravel()][lab].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def fpr_at_tpr(scores: object, labels: object, tpr: float = 0.95) -> float:
    """False-positive rate at the lowest threshold that flags ``tpr`` of the positives
    (``labels`` 1) as ``score >= threshold``. NaN when either class is missing."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    lab = _binary(np.asarray(labels).ravel(), "labels")
    _same_shape(s, lab, "scores and labels")
    if not lab.any() or lab.all():
        return float("nan")
    pos = np.sort(s[lab])[::-1]
    threshold = pos[max(0, int(np.ceil(tpr * len(pos))) - 1)]
    return float(np.mean(s[~lab] >= threshold))
