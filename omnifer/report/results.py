"""The results table of a report: metrics of each compared model, the share of the mined
gain, the chance levels; from plain evaluation results (``EvaluateRun.results`` dicts)."""

from __future__ import annotations

import math
from typing import Any

#: (row key, column title, path in an evaluation's results)
METRICS = (
    ("macro_f1", "macro-F1", ("expression", "macro_f1")),
    ("accuracy", "accuracy", ("expression", "accuracy")),
    ("ccc_mean", "mean CCC", ("va", "ccc_mean")),
    ("au_f1", "AU F1", ("au", "f1_mean")),
    ("ece_after", "ECE (after temperature scaling)", ("expression", "ece_after")),
)
#: roles whose gain over the labeled-only model is compared with the mined model's gain
GAIN_ROLES = ("mined", "distilled", "both")
COLUMNS = ("model", *(title for _, title, _ in METRICS), "training s", "share of the mined gain")


def _get(results: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = results
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        return None
    return float(value)


def metrics_of(results: dict[str, Any]) -> dict[str, float | None]:
    """The table's metrics of one evaluation (None where the results lack one)."""
    return {key: _get(results, path) for key, _, path in METRICS}


def share_of_mined_gain(rows: list[dict[str, Any]]) -> list[float | None]:
    """Per row, (macro-F1 - labeled's) / (mined's - labeled's) for rows whose ``role`` is
    mined, distilled or both; None elsewhere, and everywhere without a ``labeled`` and a
    ``mined`` row (the first of each) or when their macro-F1s are equal."""
    def first(role: str) -> float | None:
        return next((r.get("macro_f1") for r in rows if r.get("role") == role), None)

    labeled, mined = first("labeled"), first("mined")
    if labeled is None or mined is None or mined == labeled:
        return [None] * len(rows)
    return [(r["macro_f1"] - labeled) / (mined - labeled)
            if r.get("role") in GAIN_ROLES and r.get("macro_f1") is not None else None
            for r in rows]


def chance_notes(results: dict[str, Any]) -> list[str]:
    """The chance levels an evaluation recorded, as footnote sentences."""
    notes = []
    acc = _get(results, ("expression", "majority", "accuracy"))
    f1 = _get(results, ("expression", "majority", "macro_f1"))
    if acc is not None or f1 is not None:
        notes.append(f"always the majority class: accuracy {fmt(acc)}, macro-F1 {fmt(f1)}")
    au = _get(results, ("au", "chance", "f1_mean"))
    if au is not None:
        notes.append(f"every AU always present: AU F1 {fmt(au)}")
    if "va" in results:
        notes.append("constant valence/arousal: mean CCC 0")
    return notes


def fmt(value: Any, spec: str = ".3f") -> str:
    """A number for the table; blank where it is missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def results_table(rows: list[dict[str, Any]]) -> list[list[str]]:
    """The table's cells (``COLUMNS``) of result rows (name, metrics, train_seconds, share)."""
    return [[str(r.get("name", "")), *(fmt(r.get(key)) for key, _, _ in METRICS),
             fmt(r.get("train_seconds"), ".1f"), fmt(r.get("share_of_mined_gain"), ".2f")]
            for r in rows]
