"""Coreset baselines: real subsets of the same size as a distilled set.

Every selector has the signature ``(embeddings_or_None, labels, images_per_class, *, seed)``
and returns the indices of the chosen samples, class by class (class 0 first), with exactly
``images_per_class`` per class. ``random`` ignores the embeddings; ``herding`` and
``k-center`` need them (``[N, D]`` features, e.g. the penultimate layer of a network trained on
the real data). Work is per class and incremental: memory is O(class size x D), never N x N.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from omnifer.errors import OmniferError
from omnifer.registry import Registry

Selector = Callable[..., np.ndarray]

#: Coreset selectors by name.
CORESETS: Registry[Selector] = Registry("coreset")


def check_labels(labels: object, images_per_class: int | None,
                 n_classes: int | None = None) -> tuple[np.ndarray, int]:
    """Labels as int64 ``[N]`` and the number of classes, checked against ``images_per_class``.

    Every class in ``[0, n_classes)`` must hold at least ``images_per_class`` samples
    (``None``: only the range is checked).
    """
    y = np.asarray(labels)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise OmniferError(
            f"labels have shape {y.shape} and dtype {y.dtype}; pass a 1-D array of class indices"
        )
    y = y.astype(np.int64)
    k = int(y.max()) + 1 if n_classes is None and y.size else int(n_classes or 0)
    if k < 1:
        raise OmniferError(f"n_classes is {k}; pass a positive number of classes")
    if y.size and (y.min() < 0 or y.max() >= k):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise OmniferError(
            f"labels hold class {bad}, outside [0, {k}); map labels to [0, n_classes) "
            "or raise n_classes"
        )
    if images_per_class is None:
        return y, k
    ipc = int(images_per_class)
    if ipc < 1:
        raise OmniferError(f"images_per_class is {images_per_class}; pass 1 or more")
    counts = np.bincount(y, minlength=k)
    smallest = int(np.argmin(counts))
    if counts[smallest] < ipc:
        raise OmniferError(
            f"images_per_class={ipc} exceeds the {counts[smallest]} images of class {smallest} "
            f"(the smallest class); lower images_per_class to {counts[smallest]} or less, "
            f"or add images of class {smallest}"
        )
    return y, k


def _embeddings(embeddings: object, n: int, name: str) -> np.ndarray:
    if embeddings is None:
        raise OmniferError(f"{name} needs embeddings [N, D]; pass features or use 'random'")
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] != n:
        raise OmniferError(
            f"embeddings have shape {e.shape} for {n} labels; pass one row per sample"
        )
    return e


@CORESETS.register("random")
def random_subset(embeddings: object, labels: object, images_per_class: int, *,
                  seed: int = 0) -> np.ndarray:
    """``images_per_class`` samples of each class drawn uniformly without replacement."""
    y, k = check_labels(labels, images_per_class)
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.choice(np.flatnonzero(y == c), images_per_class, replace=False)
                           for c in range(k)]).astype(np.int64)


@CORESETS.register("herding")
def herding(embeddings: object, labels: object, images_per_class: int, *,
            seed: int = 0) -> np.ndarray:
    """Greedy mean matching per class: each pick brings the running mean closest to the class mean.

    The first pick is the sample closest to the class mean. ``seed`` is unused (deterministic).
    """
    y, k = check_labels(labels, images_per_class)
    e = _embeddings(embeddings, y.size, "herding")
    out = []
    for c in range(k):
        idx = np.flatnonzero(y == c)
        x = e[idx]
        mu = x.mean(0)
        total = np.zeros_like(mu)
        free = np.ones(idx.size, bool)
        for t in range(images_per_class):
            dist = np.square((total + x) / (t + 1) - mu).sum(1)
            dist[~free] = np.inf
            j = int(np.argmin(dist))
            free[j] = False
            total += x[j]
            out.append(idx[j])
    return np.asarray(out, dtype=np.int64)


@CORESETS.register("k-center")
def k_center(embeddings: object, labels: object, images_per_class: int, *,
             seed: int = 0) -> np.ndarray:
    """Greedy farthest-first traversal per class (a 2-approximation of the k-center cover).

    The first center is the sample closest to the class mean; each next one is the sample
    farthest from the centers chosen so far. ``seed`` is unused (deterministic).
    """
    y, k = check_labels(labels, images_per_class)
    e = _embeddings(embeddings, y.size, "k-center")
    out = []
    for c in range(k):
        idx = np.flatnonzero(y == c)
        x = e[idx]
        j = int(np.argmin(np.square(x - x.mean(0)).sum(1)))
        nearest = np.full(idx.size, np.inf)
        for _ in range(images_per_class):
            out.append(idx[j])
            nearest = np.minimum(nearest, np.square(x - x[j]).sum(1))
            nearest[j] = -1.0  # chosen: never again, even with duplicates
            j = int(np.argmax(nearest))
    return np.asarray(out, dtype=np.int64)


def select_coreset(name: str, embeddings: object, labels: object, images_per_class: int, *,
                   seed: int = 0) -> np.ndarray:
    """Indices chosen by the coreset method ``name`` (see :data:`CORESETS`)."""
    return CORESETS.get(name)(embeddings, labels, images_per_class, seed=seed)
