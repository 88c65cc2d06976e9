"""Out-of-distribution score from the embedding neighbourhood: how similar a face is to its
k-th nearest labeled face, against how similar the labeled faces themselves are to theirs.

A face the labeled set covers (the right domain, an expression people labeled) has k labeled
neighbours about as close as a labeled face has; a non-face, a heavily occluded face or a face
of another domain sits far from all of them. The labeled faces' own k-th-neighbour cosines come
from the cross-fit (``omnifer.mining.crossfit``), so none is its own neighbour. A face is out of
distribution when its k-th-neighbour cosine falls below the ``quantile`` of theirs.
"""

from __future__ import annotations

import numpy as np

from omnifer.errors import OmniferError


def kth_similarity(neighbour_scores: np.ndarray) -> np.ndarray:
    """float32 [n]: cosine of each row's k-th (farthest kept) labeled neighbour."""
    s = np.asarray(neighbour_scores)
    if s.ndim != 2 or s.shape[1] == 0:
        raise OmniferError(f"neighbour scores must be [n, k] with k >= 1, got shape {s.shape}")
    return s[:, -1].astype(np.float32)


def ood_cut(reference: np.ndarray, quantile: float) -> float:
    """The k-th-neighbour cosine below which a face counts as out of distribution: the
    ``quantile`` of the labeled faces' own (``-inf`` when ``quantile`` is 0: nothing is)."""
    if not 0.0 <= quantile < 1.0:
        raise OmniferError(f"the out-of-distribution quantile is {quantile!r}; use a share in "
                           "[0, 1), e.g. 0.1 (0 turns the check off)")
    ref = np.asarray(reference, np.float64)
    if quantile == 0.0 or not len(ref):
        return float("-inf")
    return float(np.quantile(ref, quantile, method="lower"))
