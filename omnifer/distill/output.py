"""A distilled set on disk: a PNG per image, the sample table (soft labels as ``soft_<class>``
columns) and a grid of every image by class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def write_distilled(result: Any, out: Path, *, classes: Any, present: np.ndarray,
                    aus: Any, root: Path | None = None) -> tuple[Path, Path]:
    """PNG per image, a sample table (soft labels as ``soft_<class>`` columns) and a grid;
    ``result`` labels index ``present`` (the classes distilled) of ``classes``."""
    import pandas as pd
    from PIL import Image

    from omnifer.artifacts import atomic_path, content_id
    from omnifer.data import LabeledSet
    from omnifer.data.table import make_table
    from omnifer.plots import figure, save_png

    pixels = np.clip(np.rint(result.images.transpose(0, 2, 3, 1) * 255), 0, 255).astype(np.uint8)
    labels = present[result.labels]
    paths, ids = [], []
    for k, (img, c) in enumerate(zip(pixels, labels)):
        path = out / "images" / classes[c] / f"{k:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Image.fromarray(img).save(tmp, format="PNG")
        paths.append(str(path))
        ids.append(content_id(path.read_bytes()))
    n = len(paths)
    nan = np.full(n, np.nan, np.float32)
    table = make_table(sample_id=ids, image=paths, source="distilled",
                       expression=labels, valence=nan, arousal=nan,
                       au={a: nan for a in aus}, weight=1.0)
    extra = None
    if result.soft_labels is not None:
        soft = np.zeros((n, len(classes)), np.float32)
        soft[:, present] = result.soft_labels
        extra = pd.DataFrame({f"soft_{c}": soft[:, i] for i, c in enumerate(classes)})
    dataset = LabeledSet(table=table, expressions=tuple(classes), aus=tuple(aus),
                         sources=("distilled",)).save(out / "distilled.parquet", extra=extra,
                                                              root=root)
    ipc = n // len(present)
    fig = figure(1.0 * ipc + 1.2, 1.0 * len(present))
    for k, img in enumerate(pixels):
        ax = fig.add_subplot(len(present), ipc, k + 1)
        ax.imshow(img)
        ax.set_xticks([])
        ax.set_yticks([])
        if k % ipc == 0:
            ax.set_ylabel(classes[labels[k]], fontsize=8)
    fig.suptitle(f"{result.method}: {ipc} images per class", fontsize=10)
    return dataset, save_png(fig, out / "grid.png")
