"""Out-of-distribution scores of predictions (higher: less like the training faces) and how
well each separates in-distribution from out-of-distribution images.

* ``max_softmax``: 1 - the top class probability (Hendrycks & Gimpel, 2017);
* ``entropy``: the total expression uncertainty (normalised predictive entropy);
* ``epistemic``: the members' disagreement (0 for one model without dropout passes);
* ``distance``: cosine distance from the embedding to its k-th nearest training embedding.
"""

from __future__ import annotations

import numpy as np

from omnifer import metrics as M
from omnifer.errors import OmniferError

SCORES = ("max_softmax", "entropy", "epistemic", "distance")
NEIGHBOURS = 10


def knn_distance(embeddings: np.ndarray, reference: np.ndarray, k: int = NEIGHBOURS,
                 batch: int = 4096) -> np.ndarray:
    """Cosine distance from each L2-normalised embedding to its ``k``-th nearest reference
    embedding (``k`` is capped at the number of references)."""
    ref = np.asarray(reference, np.float32)
    if not len(ref):
        raise OmniferError("the distance score needs reference embeddings; pass the training "
                           "set's embeddings")
    k = min(int(k), len(ref))
    out = np.empty(len(embeddings), np.float32)
    for start in range(0, len(embeddings), batch):
        sims = np.asarray(embeddings[start:start + batch], np.float32) @ ref.T
        out[start:start + batch] = 1.0 - np.partition(sims, -k, axis=1)[:, -k]
    return out


def scores(pred: dict[str, np.ndarray], unc: dict[str, np.ndarray],
           reference: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every available score per sample from an ensemble prediction and its uncertainty
    (``distance`` only with ``reference`` embeddings)."""
    out: dict[str, np.ndarray] = {}
    if "expression_probs" in pred:
        out["max_softmax"] = 1.0 - pred["expression_probs"].max(axis=1)
        out["entropy"] = unc["expression_total"]
        out["epistemic"] = unc["expression_epistemic"]
    if reference is not None:
        out["distance"] = knn_distance(pred["embedding"], reference)
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def separation(inside: dict[str, np.ndarray], outside: dict[str, np.ndarray]
               ) -> dict[str, dict[str, float]]:
    """AUROC and false-positive rate at 95% true-positive rate per score, out-of-distribution
    images as the positives."""
    result = {}
    for name in SCORES:
        if name in inside and name in outside:
            s = np.concatenate([inside[name], outside[name]])
            y = np.r_[np.zeros(len(inside[name]), bool), np.ones(len(outside[name]), bool)]
            result[name] = {"auroc": M.auroc(s, y), "fpr95": M.fpr_at_tpr(s, y, 0.95),
                            "n_in": len(inside[name]), "n_out": len(outside[name])}
    return result
