"""Occluded faces among the mined ones: the weakest region of the model's activation map.

The primitive model's last feature map, before it is pooled into the features, has one vector
per position of the face; the norm of each (``Embedder.activation_maps``) says how much the
model sees there. A labeled face has a typical layout of those norms (strong at the eyes,
brows and mouth). Where something covers a large part of a face, the model sees little under
it: the face's weakest region, a window of about 3/8 of the map's side, has a far lower
activation than the same region of a typical face, even when the eyes or the mouth left
visible still carry the expression (and give a confident, correct label, which the
neighbourhood and feature-norm checks of ``omnifer.mining.ood`` let through).

:func:`weakest_region` scores each face by the lowest mean, over such windows, of its map
divided by the labeled faces' median map (:func:`reference_map`); a mined face scoring below
the ``ood_quantile`` of the labeled faces' own scores (``ood.ood_cut``) is left out. Pure
numpy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from omnifer.errors import OmniferError
from omnifer.mining.drop import dropped_per_class, without
from omnifer.mining.mine import MineResult
from omnifer.mining.ood import ood_cut

#: window side, as a share of the activation map's side
WINDOW_SHARE = 3 / 8


def window_side(side: int) -> int:
    """The window of :func:`weakest_region` on a ``side`` x ``side`` map (at least 1)."""
    return max(1, min(side, round(side * WINDOW_SHARE)))


def reference_map(maps: np.ndarray) -> np.ndarray:
    """float32 [h, w]: the median activation map of the labeled faces' ``maps`` [n, h, w],
    each position at least 1/1000 of the map's mean (and of 1e-6), so that it can divide."""
    maps = _checked(maps)
    if not len(maps):
        raise OmniferError("no labeled activation maps to compare pool faces with; mine with "
                           "labeled faces")
    ref = np.median(maps, axis=0).astype(np.float32)
    return np.maximum(ref, max(1e-3 * float(ref.mean()), 1e-6)).astype(np.float32)


def weakest_region(maps: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """float32 [n]: for each face, the lowest mean over square windows (:func:`window_side`)
    of its activation map relative to ``reference`` (1: as strong as a typical face
    everywhere; near 0: a region the model sees nothing in)."""
    maps = _checked(maps)
    if maps.shape[1:] != reference.shape:
        raise OmniferError(f"activation maps of shape {maps.shape[1:]} against a reference of "
                           f"{reference.shape}; compute both with the same model and input "
                           "size")
    k = window_side(min(reference.shape))
    relative = maps.astype(np.float32) / reference
    if not len(maps):
        return np.zeros(0, np.float32)
    windows = sliding_window_view(relative, (k, k), axis=(1, 2))
    return windows.mean(axis=(-1, -2)).min(axis=(1, 2)).astype(np.float32)


def drop_occluded(result: MineResult, pool_maps: np.ndarray, labeled_maps: np.ndarray, *,
                  quantile: float, classes: Sequence[str]
                  ) -> tuple[MineResult, dict[str, Any]]:
    """``result`` without the mined faces whose :func:`weakest_region` (``pool_maps``: one
    activation map per mined face, in order) is below the ``quantile`` of the labeled faces'
    own (``labeled_maps``), and the record of the check for the run's manifest."""
    if len(pool_maps) != len(result.rows):
        raise OmniferError(f"{len(pool_maps)} activation maps for {len(result.rows)} mined "
                           "faces; give one per mined face")
    reference = reference_map(labeled_maps)
    labeled = weakest_region(labeled_maps, reference)
    cut = ood_cut(labeled, quantile)
    scores = weakest_region(pool_maps, reference)
    keep = scores >= cut
    n = int((~keep).sum())
    note = (f"occlusion: {n} of {len(keep)} mined faces left out, the weakest region of their "
            f"activation map below {cut:.3f} of a typical labeled face's (the {quantile:g} "
            "quantile of the labeled faces'); the calibration estimate does not count this "
            "check")
    record = {"cut": cut, "window": window_side(min(reference.shape)), "scored": len(keep),
              "dropped": n, "dropped_per_class": dropped_per_class(result.labels, keep, classes)}
    out = without(result, keep, classes=classes, counter="ood_occluded", note=note)
    return dataclasses.replace(out, occlusion=(labeled, scores, cut)), record


def _checked(maps: np.ndarray) -> np.ndarray:
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise OmniferError(f"activation maps must be [faces, height, width], got shape "
                           f"{maps.shape}")
    return maps
