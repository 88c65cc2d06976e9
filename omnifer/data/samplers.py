"""Per-sample sampling weights that balance expressions, valence/arousal and AUs.

The weights are meant for ``torch.utils.data.WeightedRandomSampler``: a sample is drawn with
probability proportional to its weight. They only decide what is drawn; the per-sample
``weight`` column (e.g. a mined sample's confidence) is left to the loss and is not used here.

Each strategy weighs the samples that carry its label; the others get 1:

- ``expression``: inverse frequency of the sample's class.
- ``va``: inverse count of the sample's cell in a ``va_grid`` x ``va_grid`` histogram of
  [-1, 1]^2.
- ``au``: mean over the sample's positive AUs of ``1 / positive rate`` of that AU; a sample
  with no positive AU counts as one more "class", the all-negative one, and gets
  ``1 / (share of all-negative rows among the rows carrying AU labels)``.

A strategy's weights are clipped at ``max_ratio`` times their median, then scaled to mean 1
over the samples that carry the label. A sample's final weight is the mean over the
strategies that apply to it (1 if none does).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from omnifer.errors import OmniferError

STRATEGIES: tuple[str, ...] = ("expression", "va", "au")


def va_cells(va: np.ndarray, va_grid: int) -> np.ndarray:
    """Histogram cell of each [N, 2] valence/arousal pair in a ``va_grid``^2 grid over [-1, 1]^2."""
    idx = np.clip(np.floor((np.asarray(va, np.float64) + 1.0) / 2.0 * va_grid), 0, va_grid - 1)
    idx = idx.astype(np.int64)
    return idx[:, 0] * va_grid + idx[:, 1]


def _expression_weights(arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    has = np.asarray(arrays["expression_mask"], bool)
    expr = np.asarray(arrays["expression"], np.int64)
    counts = np.bincount(expr[has]) if has.any() else np.zeros(0, np.int64)
    w = np.ones(len(has))
    w[has] = 1.0 / counts[expr[has]]
    return w, has


def _va_weights(
    arrays: Mapping[str, np.ndarray], va_grid: int
) -> tuple[np.ndarray, np.ndarray]:
    has = np.asarray(arrays["va_mask"], bool)
    cells = va_cells(arrays["va"], va_grid)
    counts = np.bincount(cells[has], minlength=va_grid * va_grid)
    w = np.ones(len(has))
    w[has] = 1.0 / counts[cells[has]]
    return w, has


def _au_weights(arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    mask = np.asarray(arrays["au_mask"], bool)
    positive = (np.asarray(arrays["au"], np.float64) >= 0.5) & mask
    has = mask.any(axis=1)
    w = np.ones(len(has))
    if not has.any():
        return w, has
    labeled = mask.sum(axis=0)
    rate = positive.sum(axis=0) / np.maximum(labeled, 1)
    inverse = np.divide(1.0, rate, out=np.zeros_like(rate), where=rate > 0)
    n_pos = positive.sum(axis=1)
    all_negative = has & (n_pos == 0)
    with_pos = has & (n_pos > 0)
    w[with_pos] = (positive[with_pos] * inverse).sum(axis=1) / n_pos[with_pos]
    if all_negative.any():
        w[all_negative] = has.sum() / all_negative.sum()
    return w, has


def _clip_and_normalise(w: np.ndarray, has: np.ndarray, max_ratio: float) -> np.ndarray:
    out = np.ones(len(w))
    if has.any():
        sel = np.minimum(w[has], max_ratio * np.median(w[has]))
        out[has] = sel / sel.mean()
    return out


def balance_weights(
    arrays: Mapping[str, np.ndarray],
    *,
    strategies: Iterable[str] = STRATEGIES,
    va_grid: int = 10,
    max_ratio: float = 10.0,
) -> np.ndarray:
    """Sampling weights (float64 [N]) from ``LabeledSet.arrays()`` output; see the module doc.

    No strategy gives all ones.
    """
    strategies = (strategies,) if isinstance(strategies, str) else tuple(strategies)
    for name in strategies:
        if name not in STRATEGIES:
            raise OmniferError(
                f"unknown balancing strategy {name!r}; choose from: {', '.join(STRATEGIES)}"
            )
    if int(va_grid) < 1:
        raise OmniferError(f"va_grid is {va_grid}; use 1 or more cells per axis")
    if not float(max_ratio) >= 1.0:
        raise OmniferError(f"max_ratio is {max_ratio}; use a value >= 1")
    n = len(arrays["weight"])
    total = np.zeros(n)
    count = np.zeros(n)
    for name in dict.fromkeys(strategies):
        if name == "expression":
            w, has = _expression_weights(arrays)
        elif name == "va":
            w, has = _va_weights(arrays, int(va_grid))
        else:
            w, has = _au_weights(arrays)
        total += np.where(has, _clip_and_normalise(w, has, float(max_ratio)), 0.0)
        count += has
    return np.where(count > 0, total / np.maximum(count, 1), 1.0)


def _shares(mass: np.ndarray) -> np.ndarray:
    s = mass.sum()
    return mass / s if s > 0 else np.zeros_like(mass)


def balance_report(
    arrays: Mapping[str, np.ndarray],
    weights: np.ndarray,
    expressions: Sequence[str],
    *,
    va_grid: int = 10,
) -> dict[str, Any]:
    """Label shares expected under uniform sampling (``before``) and under sampling
    proportional to ``weights`` (``after``).

    ``expression``: share of each class among expression-labeled draws; ``va``: cells of the
    ``va_grid``^2 histogram that hold a sample, and the largest cell's share of VA-labeled draws;
    ``au``: each AU's positive rate among draws labeled for it (None for an AU with no label).
    """
    weights = np.asarray(weights, np.float64)
    n = len(arrays["weight"])
    if weights.shape != (n,):
        raise OmniferError(
            f"balance weights have shape {weights.shape}; expected ({n},), one per sample"
        )
    if (weights < 0).any() or not np.isfinite(weights).all():
        raise OmniferError("balance weights must be finite and >= 0; recompute them")
    uniform = np.ones(n)

    has = np.asarray(arrays["expression_mask"], bool)
    expr = np.asarray(arrays["expression"], np.int64)
    k = len(expressions)
    if has.any() and expr[has].max() >= k:
        raise OmniferError(
            f"expression index {int(expr[has].max())} is outside the {k} names given; "
            "pass the set's expressions vocabulary"
        )

    def class_shares(w: np.ndarray) -> dict[str, float]:
        mass = np.bincount(expr[has], weights=w[has], minlength=k)
        return {name: float(s) for name, s in zip(expressions, _shares(mass))}

    has_va = np.asarray(arrays["va_mask"], bool)
    cells = va_cells(arrays["va"], int(va_grid))

    def max_cell_share(w: np.ndarray) -> float:
        mass = np.bincount(cells[has_va], weights=w[has_va], minlength=int(va_grid) ** 2)
        return float(_shares(mass).max()) if has_va.any() else 0.0

    mask = np.asarray(arrays["au_mask"], bool)
    positive = (np.asarray(arrays["au"], np.float64) >= 0.5) & mask

    def positive_rates(w: np.ndarray) -> list[float | None]:
        labeled = (mask * w[:, None]).sum(axis=0)
        pos = (positive * w[:, None]).sum(axis=0)
        return [float(p / d) if d > 0 else None for p, d in zip(pos, labeled)]

    return {
        "expression": {"before": class_shares(uniform), "after": class_shares(weights)},
        "va": {
            "occupied_cells": int(len(np.unique(cells[has_va]))),
            "max_cell_share_before": max_cell_share(uniform),
            "max_cell_share_after": max_cell_share(weights),
        },
        "au": {
            "positive_rate_before": positive_rates(uniform),
            "positive_rate_after": positive_rates(weights),
        },
    }


def source_shares(weights: np.ndarray | None, sources: np.ndarray,
                  shares: Mapping[str, float]) -> np.ndarray:
    """Sampling weights rescaled so that each source of ``shares`` gets that share of the draws.

    Within a source the relative weights (e.g. class balance) are kept; the sources not named
    share what is left. ``sources`` is the source name of each sample.
    """
    w = np.ones(len(sources)) if weights is None else np.asarray(weights, np.float64).copy()
    sources = np.asarray(sources, dtype=object)
    named = np.zeros(len(w), bool)
    for name, share in shares.items():
        rows = sources == name
        if not rows.any():
            raise OmniferError(
                f"source_share names {name!r}, but no training sample comes from it; sources: "
                + ", ".join(sorted(set(sources.tolist())))
            )
        w[rows] *= share / w[rows].sum()
        named |= rows
    rest = 1.0 - sum(shares.values())
    if (~named).any():
        w[~named] *= rest / w[~named].sum()
    return w * len(w) / w.sum()


__all__ = ["STRATEGIES", "balance_report", "balance_weights", "source_shares", "va_cells"]
