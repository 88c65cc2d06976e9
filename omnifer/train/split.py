"""The validation split: which rows of a labeled set train and which validate."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from omnifer.data.table import LabeledSet


def split_validation(labeled: LabeledSet, fraction: float, seed: int,
                     sources: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation rows: per source of ``sources`` (None: every source), a random
    ``fraction`` of its images (none for sources under 10 rows). The rows of a validation
    image (sample id) in other sources do not train either."""
    rng = np.random.default_rng(seed)
    src = labeled.table["source"].to_numpy(dtype=object)
    sid = labeled.table["sample_id"].to_numpy(dtype=object)
    repeat = labeled.table["sample_id"].duplicated().to_numpy(bool)
    names = [s for s in labeled.sources if sources is None or s in sources]
    val = []
    for name in names:
        rows = np.flatnonzero(src == name)
        if len(rows) >= 10:
            images = rows[~repeat[rows]]
            val.append(rng.permutation(images)[:round(fraction * len(images))])
    picked = sid[np.concatenate(val)] if val else np.zeros(0, object)
    held = np.isin(sid, picked)
    return np.flatnonzero(~held), np.flatnonzero(held & np.isin(src, names))
