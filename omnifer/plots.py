"""Figures without a display: ``matplotlib.figure.Figure`` on the Agg canvas, never ``pyplot``
(no global figure registry; a figure is freed when it goes out of scope), written atomically."""

from __future__ import annotations

import os
from pathlib import Path

from omnifer.artifacts import atomic_path


def figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return Path(path)
