"""Classes with fewer images than a distillation asks for, filled with augmented views."""

from __future__ import annotations

import numpy as np

#: The views that fill a class keep at least this share of an image's area.
FILL_SCALE = (0.6, 1.0)


def fill_short_classes(x: np.ndarray, y: np.ndarray, n: int, *, seed: int = 0
                       ) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """``x`` ``[N, C, H, W]`` and labels ``y`` with every class that has at least one image but
    fewer than ``n`` given random resized, possibly mirrored views of its images (in turn) up
    to ``n``; also the number of views added per class."""
    import torch

    from omnifer.distill.views import random_views

    gen = torch.Generator().manual_seed(int(seed))
    counts = np.bincount(y, minlength=int(y.max()) + 1 if y.size else 0)
    added: dict[int, int] = {}
    xs, ys = [x], [y]
    for c in np.flatnonzero((counts > 0) & (counts < n)):
        rows = np.flatnonzero(y == c)
        need = int(n - len(rows))
        src = torch.from_numpy(x[np.resize(rows, need)])
        views = random_views(src, 1, scale=FILL_SCALE, gen=gen, keep_first=False)[:, 0]
        xs.append(views.numpy().astype(x.dtype))
        ys.append(np.full(need, c, y.dtype))
        added[int(c)] = need
    if not added:
        return x, y, added
    return np.concatenate(xs), np.concatenate(ys), added
