"""Post-hoc calibration: temperature scaling for expressions, per-AU decision thresholds."""

from __future__ import annotations

import math

import numpy as np

from omnifer.errors import OmniferError
from omnifer.metrics import tune_thresholds as tune_au_thresholds

__all__ = ["fit_temperature", "temperature_nll", "tune_au_thresholds"]

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def temperature_nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of ``softmax(logits / temperature)`` at labels ``y``."""
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(y)), y]))


def fit_temperature(logits: object, y: object, *,
                    bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature ``T`` in ``bounds`` that minimises the NLL of ``softmax(logits / T)``.

    The NLL is convex in ``1 / T`` and so unimodal in ``log T``: a coarse grid over ``log T``
    brackets the minimum and a golden-section search refines it.
    """
    z = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(y)
    if z.ndim != 2 or labels.ndim != 1 or z.shape[0] != labels.shape[0]:
        raise OmniferError(
            f"logits have shape {z.shape} and y has shape {labels.shape}; "
            "pass logits [N, C] and one class index per row"
        )
    if z.size == 0:
        raise OmniferError(f"logits are empty (shape {z.shape}); pass at least one sample")
    if not np.all(np.isfinite(z)):
        raise OmniferError("logits hold NaN or infinite values; check the model outputs")
    if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= z.shape[1]:
        raise OmniferError(
            f"y must hold class indices in [0, {z.shape[1]}), got dtype {labels.dtype} "
            f"with range [{labels.min()}, {labels.max()}]; map labels to class indices"
        )
    lo, hi = (float(b) for b in bounds)
    if not 0 < lo < hi:
        raise OmniferError(f"bounds are {bounds}; pass (low, high) with 0 < low < high")
    labels = labels.astype(np.int64)

    def loss(log_t: float) -> float:
        return temperature_nll(z, labels, math.exp(log_t))

    grid = np.linspace(math.log(lo), math.log(hi), 33)
    values = [loss(g) for g in grid]
    i = int(np.argmin(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = loss(c), loss(d)
    while b - a > 1e-5:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = loss(d)
    return float(math.exp((a + b) / 2.0))
