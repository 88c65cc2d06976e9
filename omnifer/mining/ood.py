"""Out-of-distribution scores, each read against the labeled faces' own:

- the embedding neighbourhood: how similar a face is to its k-th nearest labeled face. A face
  the labeled set covers (the right domain, an expression people labeled) has k labeled
  neighbours about as close as a labeled face has; a face of another domain sits far from all
  of them. The labeled faces' own k-th-neighbour cosines come from the cross-fit
  (``omnifer.mining.crossfit``), so none is its own neighbour.
- the feature norm (``Embedder.features``): the length of the model's backbone features
  before they are normalised into the embedding. The model's features respond to what it
  learned to see; a non-face or a heavily occluded face gives weak features whose direction
  can still land near a class, so the neighbourhood alone does not reject it.

A face is out of distribution when either score falls below the ``quantile`` of the labeled
faces' (:func:`ood_cut`).
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


def ood_cut(reference: np.ndarray | None, quantile: float) -> float:
    """The score (k-th-neighbour cosine or feature norm) below which a face counts as out of
    distribution: the ``quantile`` of the labeled faces' own ``reference`` scores (``-inf``
    when ``quantile`` is 0 or there is no reference: nothing is)."""
    if not 0.0 <= quantile < 1.0:
        raise OmniferError(f"the out-of-distribution quantile is {quantile!r}; use a share in "
                           "[0, 1), e.g. 0.1 (0 turns the check off)")
    ref = np.asarray([] if reference is None else reference, np.float64)
    if quantile == 0.0 or not len(ref):
        return float("-inf")
    return float(np.quantile(ref, quantile, method="lower"))
