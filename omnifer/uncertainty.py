"""Predictive uncertainty of a model or an ensemble, split into its two sources.

For the class probabilities ``p_m`` of M members (or M dropout passes) on one sample:

* total = H(mean_m p_m), the entropy of the mean prediction;
* aleatoric = mean_m H(p_m), the members' own entropy (ambiguity they all see);
* epistemic = total - aleatoric, the members' disagreement (the mutual information).

Each is divided by log C, so 1 is a uniform prediction over C classes. Valence/arousal bins
are two C-way predictions, AUs are binary ones; both report the mean over their dimensions.
A single model has no epistemic part (0).
"""

from __future__ import annotations

import numpy as np

from omnifer.errors import OmniferError

PARTS = ("total", "aleatoric", "epistemic")


def entropy(probs: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats along ``axis`` (0 log 0 = 0)."""
    p = np.asarray(probs, dtype=np.float64)
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=axis)


def decompose(member_probs: np.ndarray) -> dict[str, np.ndarray]:
    """Total, aleatoric and epistemic uncertainty ``[N]`` from ``[M, N, ..., C]``
    probabilities (C classes in the last axis; axes between N and C are averaged)."""
    p = np.asarray(member_probs, dtype=np.float64)
    if p.ndim < 3 or p.shape[0] < 1 or p.shape[-1] < 2:
        raise OmniferError(f"member probabilities have shape {p.shape}; pass [members, samples, "
                           "..., classes] with at least 2 classes")
    scale = np.log(p.shape[-1])
    total = entropy(p.mean(axis=0)) / scale
    aleatoric = entropy(p).mean(axis=0) / scale
    axes = tuple(range(1, total.ndim))
    total, aleatoric = total.mean(axis=axes), aleatoric.mean(axis=axes)
    return {"total": total, "aleatoric": aleatoric,
            "epistemic": np.clip(total - aleatoric, 0.0, None)}


def decompose_binary(member_probs: np.ndarray) -> dict[str, np.ndarray]:
    """The same for ``[M, N, A]`` independent binary probabilities (e.g. AUs), averaged
    over the A outputs."""
    p = np.asarray(member_probs, dtype=np.float64)
    return decompose(np.stack([1.0 - p, p], axis=-1))
