"""``--max-uncertainty``: mined faces the primitive model is unsure of, left out.

The caller scores each mined face's epistemic uncertainty (the members' disagreement, divided
by log C: ``omnifer.uncertainty``), from the members of an ensemble or the passes of
Monte-Carlo dropout; this module only decides with those values. A face is kept when its value
is at most ``max_uncertainty`` (a value that is not a number counts as above it). Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from omnifer.errors import OmniferError
from omnifer.mining.drop import dropped_per_class, without
from omnifer.mining.mine import MineResult


def keep_mask(epistemic: np.ndarray, max_uncertainty: float) -> np.ndarray:
    """bool [n]: the faces whose epistemic uncertainty is at most ``max_uncertainty``, compared
    at the values' own float precision (a float32 0.1 is not above a cut of 0.1)."""
    values = np.asarray(epistemic)
    if values.dtype.kind != "f":
        values = values.astype(np.float64)
    if values.ndim != 1:
        raise OmniferError(f"epistemic uncertainty has shape {values.shape}; pass one value "
                           "per mined face")
    with np.errstate(invalid="ignore"):
        return values <= values.dtype.type(max_uncertainty)


def filter_result(result: MineResult, epistemic: np.ndarray, max_uncertainty: float, *,
                  classes: Sequence[str], how: str) -> tuple[MineResult, np.ndarray,
                                                             dict[str, Any]]:
    """``result`` without the faces above ``max_uncertainty``, the kept faces' values and the
    record of what was dropped (for the run's manifest). ``how`` names the scoring, e.g.
    "ensemble of 3 members"."""
    epistemic = np.asarray(epistemic, dtype=np.float32)
    if len(epistemic) != len(result.rows):
        raise OmniferError(f"{len(epistemic)} uncertainty values for {len(result.rows)} mined "
                           "faces; score every mined face")
    keep = keep_mask(epistemic, max_uncertainty)
    n_dropped = int((~keep).sum())
    note = (f"uncertainty: {n_dropped} of {len(keep)} mined faces dropped, their epistemic "
            f"uncertainty (/ log C, {how}) above {max_uncertainty:g}; the calibration estimate "
            "does not count this filter")
    filtered = without(result, keep, classes=classes, counter="uncertainty_dropped", note=note)
    dropped = dropped_per_class(result.labels, keep, classes)
    finite = epistemic[np.isfinite(epistemic)]
    record = {"max_uncertainty": float(max_uncertainty), "scored_with": how,
              "scored": len(keep), "dropped": n_dropped, "dropped_per_class": dropped,
              "epistemic_mean": float(finite.mean()) if len(finite) else None,
              "epistemic_max": float(finite.max()) if len(finite) else None}
    return filtered, epistemic[keep], record
