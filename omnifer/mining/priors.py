"""The pool's class shares, estimated from what the mining predicts (black-box shift
estimation), so that calibration on the labeled faces speaks for the pool.

Labeled FER sets are often balanced; a pool is not (neutral and happy faces dominate real
ones). The precision of the faces mined as c depends on how many faces of the other classes
the pool holds, so calibration faces are weighted by w_j = pi_pool(j) / pi_labeled(j) for
their true class j. pi_pool solves mu = C pi, where mu is the share of pool candidates mined
as each class and C[i, j] the share of class-j calibration faces mined as i (Lipton et al.,
2018), by non-negative least squares, normalised to sum to 1.
"""

from __future__ import annotations

import numpy as np


def confusion(best: np.ndarray, truth: np.ndarray, n_classes: int) -> np.ndarray:
    """float [C, C]: column j is the distribution of the mined class of class-j faces
    (a column of zeros for a class with no face)."""
    out = np.zeros((n_classes, n_classes))
    np.add.at(out, (best, truth), 1.0)
    total = out.sum(axis=0, keepdims=True)
    return np.divide(out, total, out=np.zeros_like(out), where=total > 0)


def pool_priors(cal_best: np.ndarray, cal_truth: np.ndarray, pool_best: np.ndarray,
                n_classes: int) -> np.ndarray | None:
    """float [C]: estimated class shares of the pool faces whose mined classes are
    ``pool_best``; None when there is nothing to estimate from."""
    from scipy.optimize import nnls

    if not len(pool_best) or not len(cal_best):
        return None
    mu = np.bincount(pool_best, minlength=n_classes) / len(pool_best)
    pi, _ = nnls(confusion(cal_best, cal_truth, n_classes), mu)
    return pi / pi.sum() if pi.sum() > 0 else None


def shift_weights(truth: np.ndarray, priors: np.ndarray | None, n_classes: int,
                  among: np.ndarray) -> np.ndarray:
    """float [h]: the weight of each calibration face, pi_pool(j) / pi_labeled(j) of its class
    j, pi_labeled measured over the faces ``among`` (the ones like the pool's candidates),
    scaled to mean 1 there (all ones without priors)."""
    if priors is None or not among.any():
        return np.ones(len(truth))
    own = np.bincount(truth[among], minlength=n_classes) / among.sum()
    ratio = np.divide(priors, own, out=np.zeros(n_classes), where=own > 0)
    w = ratio[truth]
    scale = w[among].mean()
    return w / scale if scale > 0 else np.ones(len(truth))
