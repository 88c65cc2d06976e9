"""Evaluation figures: reliability diagrams and confusion matrices, written as PNG files.

Figures come from ``omnifer.plots`` (Agg canvas, no display needed, atomic writes).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from omnifer.errors import OmniferError
from omnifer.metrics import ece, reliability_bins
from omnifer.plots import figure as _figure
from omnifer.plots import save_png as _save


def _reliability_panel(fig, spec, probs, y, n_bins: int, label: str, color: str) -> None:
    bins = reliability_bins(probs, y, n_bins)
    edges = bins["edges"]
    width = np.diff(edges)
    filled = bins["count"] > 0
    top_grid = spec.subgridspec(2, 1, height_ratios=[3, 1], hspace=0.08)
    top = fig.add_subplot(top_grid[0])
    hist = fig.add_subplot(top_grid[1], sharex=top)

    top.bar(edges[:-1][filled], bins["accuracy"][filled], width=width[filled], align="edge",
            color=color, edgecolor="black", linewidth=0.5,
            label=f"accuracy (ECE {ece(probs, y, n_bins):.3f})")
    gap_lo = np.minimum(bins["accuracy"], bins["confidence"])[filled]
    gap_hi = np.maximum(bins["accuracy"], bins["confidence"])[filled]
    top.bar(edges[:-1][filled], gap_hi - gap_lo, bottom=gap_lo, width=width[filled],
            align="edge", color="tab:red", alpha=0.3, edgecolor="tab:red", hatch="//",
            linewidth=0.5, label="gap to confidence")
    top.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(label, fontsize=10)
    top.legend(loc="upper left", fontsize=8)
    top.tick_params(labelbottom=False)

    hist.bar(edges[:-1], bins["count"], width=width, align="edge", color="gray",
             edgecolor="black", linewidth=0.5)
    hist.set_xlabel("confidence (top-1 probability)")
    hist.set_ylabel("count")


def reliability_diagram(path: str | os.PathLike, probs: np.ndarray, y: np.ndarray, *,
                        probs_after: np.ndarray | None = None, n_bins: int = 15,
                        title: str = "Expression reliability") -> Path:
    """Reliability diagram of ``probs`` (and of ``probs_after`` in a second panel) as a PNG.

    Each panel shows accuracy per confidence bin against the diagonal, the ECE in the legend
    and a histogram of how many samples fall in each bin.
    """
    panels = [(probs, "before calibration" if probs_after is not None else "", "tab:blue")]
    if probs_after is not None:
        panels.append((probs_after, "after temperature scaling", "tab:green"))
    fig = _figure(5.0 * len(panels), 6.0)
    try:
        grid = fig.add_gridspec(1, len(panels), wspace=0.25)
        for i, (p, label, color) in enumerate(panels):
            _reliability_panel(fig, grid[0, i], p, y, n_bins, label, color)
        fig.suptitle(title)
        return _save(fig, path)
    finally:
        fig.clear()


def confusion_plot(path: str | os.PathLike, cm: np.ndarray, class_names: Sequence[str], *,
                   normalize: bool = True, title: str = "Expression confusion") -> Path:
    """Heat map of a confusion matrix (rows true, columns predicted) as a PNG.

    With ``normalize`` the colours are row percentages and each cell shows the percentage
    and the count; otherwise colours and labels are counts.
    """
    counts = np.asarray(cm)
    n = len(class_names)
    if counts.ndim != 2 or counts.shape != (n, n):
        raise OmniferError(
            f"cm has shape {counts.shape} but there are {n} class names; "
            "pass a square matrix with one row and column per class"
        )
    totals = counts.sum(axis=1, keepdims=True).astype(np.float64)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    values = shares if normalize else counts.astype(np.float64)
    vmax = 1.0 if normalize else max(float(values.max()), 1.0)

    size = max(4.0, 0.7 * n + 2.0)
    fig = _figure(size + 1.0, size)
    try:
        ax = fig.add_subplot(1, 1, 1)
        image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04,
                     label="share of true class" if normalize else "count")
        ax.set_xticks(range(n), labels=list(class_names), rotation=45, ha="right")
        ax.set_yticks(range(n), labels=list(class_names))
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        fontsize = 8 if n <= 10 else 6
        for i in range(n):
            for j in range(n):
                text = (f"{100 * shares[i, j]:.0f}%\n({counts[i, j]})" if normalize
                        else f"{counts[i, j]}")
                color = "white" if values[i, j] > 0.6 * vmax else "black"
                ax.text(j, i, text, ha="center", va="center", color=color, fontsize=fontsize)
        return _save(fig, path)
    finally:
        fig.clear()
