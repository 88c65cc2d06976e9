"""Label columns of a labeled database: which source column plays which role, and the parsed
label values, with a reason for every row whose value is bad.

Expression values are names (``happy``, ``Happiness``) or integers in a dataset's label order;
valence and arousal are floats in [-1, 1]; ``AU<n>`` values are 0/1. Empty means missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from omnifer.errors import OmniferError
from omnifer.labels import (
    DATASET_ORDERS,
    EXPRESSIONS_WITH_CONTEMPT,
    TASKS,
    VA_RANGE,
    au_name,
    au_names,
    canonical_expression,
    dataset_order,
    expression_index,
)

LabelOrder = str | Mapping[int, str] | None
#: Label columns of a manifest / ``hf`` dataset besides ``AU<n>``.
LABEL_COLUMNS: tuple[str, ...] = ("expression", "valence", "arousal")
#: Keys ``columns=`` accepts besides ``AU<n>``.
COLUMN_ROLES: tuple[str, ...] = ("image", *LABEL_COLUMNS)


def is_missing(v: Any) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    if isinstance(v, (float, np.floating)):
        return math.isnan(v)
    if isinstance(v, str):
        return not v.strip()
    return False


def folder_label(name: str, order: LabelOrder = None) -> int | None:
    """Canonical index of a class-folder name, ``None`` if it is not an expression name."""
    text = name.strip()
    if order is not None and text.lstrip("-").isdigit():
        try:
            return expression_index(int(text), order=order, classes=EXPRESSIONS_WITH_CONTEMPT)
        except OmniferError:
            return None
    try:
        return EXPRESSIONS_WITH_CONTEMPT.index(
            canonical_expression(text, classes=EXPRESSIONS_WITH_CONTEMPT))
    except OmniferError:
        return None


def order_mapping(order: Mapping[Any, Any]) -> dict[int, str]:
    """An explicit label order as ``{int: name}``; a key that is not an integer or a name that
    is not an expression is a one-line error (rows are never dropped for a typo in it)."""
    try:
        out = {int(k): str(v) for k, v in order.items()}
    except (TypeError, ValueError):
        raise OmniferError(
            f"label_order mapping {dict(order)!r} must map integers to expression names"
        ) from None
    for key, name in out.items():
        try:
            canonical_expression(name, classes=EXPRESSIONS_WITH_CONTEMPT)
        except OmniferError:
            raise OmniferError(
                f"label_order maps {key} to unknown expression {name!r}; known names are "
                f"{', '.join(EXPRESSIONS_WITH_CONTEMPT)} (or synonyms such as happy): fix that "
                "entry of label_order"
            ) from None
    return out


class _ExpressionParser:
    """Maps expression values (names, integers in a label order) to canonical indices."""

    def __init__(self, *, order: LabelOrder, where: str) -> None:
        self.order = order
        self.where = where
        self.cache: dict[Any, tuple[int, str | None]] = {}

    def __call__(self, value: Any) -> tuple[int, str | None]:
        try:
            key: Any = ("v", value)
            hash(key)
        except TypeError:
            key = ("r", repr(value))
        hit = self.cache.get(key)
        if hit is None:
            hit = self.cache[key] = self._parse(value)
        return hit

    def _parse(self, v: Any) -> tuple[int, str | None]:
        if is_missing(v):
            return -1, None
        if isinstance(v, (bool, np.bool_)):
            return -1, f"expression {v!r} is a boolean, not a name or an integer label"
        if isinstance(v, str):
            text = v.strip()
            if text.lstrip("-").isdigit():
                return self._integer(int(text))
            try:
                number = float(text)
            except ValueError:
                number = None
            if number is not None:
                if number.is_integer():
                    return self._integer(int(number))
                return -1, f"expression {v!r} is neither an integer label nor a name"
            try:
                canon = canonical_expression(text, classes=EXPRESSIONS_WITH_CONTEMPT)
            except OmniferError:
                return -1, (f"unknown expression {v!r}; known names are "
                            f"{', '.join(EXPRESSIONS_WITH_CONTEMPT)} (or synonyms such as happy)")
            return EXPRESSIONS_WITH_CONTEMPT.index(canon), None
        if isinstance(v, (int, np.integer)):
            return self._integer(int(v))
        if isinstance(v, (float, np.floating)):
            if float(v).is_integer():
                return self._integer(int(v))
            return -1, f"expression {v!r} is neither an integer label nor a name"
        return -1, f"expression {v!r} has type {type(v).__name__}; expected a name or an integer"

    def _integer(self, value: int) -> tuple[int, str | None]:
        if self.order is None:
            raise OmniferError(
                f"{self.where} holds integer expression labels (e.g. {value}); set label_order "
                f"to the dataset's numbering ({', '.join(DATASET_ORDERS)}) or write names"
            )
        try:
            idx = expression_index(value, order=self.order, classes=EXPRESSIONS_WITH_CONTEMPT)
        except OmniferError:
            valid = sorted(dataset_order(self.order))
            label = self.order if isinstance(self.order, str) else "given"
            return -1, (f"expression label {value} is not in the {label} label order "
                        f"(valid: {valid[0]}..{valid[-1]})")
        return (-1 if idx is None else idx), None


def _parse_expression(values: pd.Series, *, order: LabelOrder,
                      where: str) -> tuple[np.ndarray, list[str | None]]:
    parse = _ExpressionParser(order=order, where=where)
    out = np.full(len(values), -1, dtype=np.int16)
    reasons: list[str | None] = [None] * len(values)
    for i, v in enumerate(values.tolist()):
        out[i], reasons[i] = parse(v)
    return out, reasons


def _parse_float(values: pd.Series, *, what: str, where: str,
                 allowed: str) -> tuple[np.ndarray, list[str | None]]:
    """Floats with NaN for missing; ``allowed`` is ``"va"`` ([-1, 1]) or ``"binary"`` (0/1)."""
    n = len(values)
    reasons: list[str | None] = [None] * n
    if pd.api.types.is_bool_dtype(values.dtype):
        num = values.astype("float64")
    else:
        try:
            num = pd.to_numeric(values, errors="coerce")
        except (TypeError, ValueError):
            raise OmniferError(
                f"{where} column {what!r} has values of type {values.dtype}; it needs numbers "
                "(empty for missing)"
            ) from None
    arr = np.array(num, dtype=np.float64)
    missing = np.array(values.isna().to_numpy(bool))
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        blank = values.map(lambda v: isinstance(v, str) and not v.strip(), na_action="ignore")
        missing |= blank.fillna(False).to_numpy(bool)
    arr[missing] = np.nan
    not_number = ~missing & np.isnan(arr)
    if allowed == "va":
        lo, hi = VA_RANGE
        out_of_range = ~missing & ~np.isnan(arr) & ~((arr >= lo) & (arr <= hi))
    else:
        out_of_range = ~missing & ~np.isnan(arr) & ~np.isin(arr, (0.0, 1.0))
    raw = values.tolist()
    for i in np.flatnonzero(not_number):
        reasons[i] = f"{what} {raw[i]!r} is not a number"
    for i in np.flatnonzero(out_of_range):
        if allowed == "va":
            reasons[i] = f"{what} {arr[i]:g} is outside [{VA_RANGE[0]:g}, {VA_RANGE[1]:g}]"
        else:
            reasons[i] = f"{what} value {arr[i]:g} is not 0 or 1"
    arr[not_number | out_of_range] = np.nan
    return arr.astype(np.float32), reasons


def merge_reasons(n: int, *lists: Sequence[str | None]) -> list[str | None]:
    out: list[str | None] = [None] * n
    for reasons in lists:
        for i, r in enumerate(reasons):
            if r is not None:
                out[i] = r if out[i] is None else f"{out[i]}; {r}"
    return out


def resolve_columns(available: Sequence[str], columns: Mapping[str, str],
                     tasks: frozenset[str] | None, where: str) -> dict[str, str]:
    """Role (image, expression, valence, arousal, AU<n>) -> source column."""
    avail = list(available)
    for role, col in columns.items():
        if col not in avail:
            raise OmniferError(
                f"columns maps {role!r} to {col!r}, but {where} has no such column; its columns "
                f"are {', '.join(map(str, avail))}"
            )
    roles: dict[str, str] = dict(columns)
    taken = set(columns.values())
    for role in COLUMN_ROLES:
        if role in roles:
            continue
        exact = [c for c in avail if c == role and c not in taken]
        loose = [c for c in avail if str(c).strip().lower() == role and c not in taken]
        found = exact or loose
        if len(found) > 1:
            raise OmniferError(
                f"{where} has several columns for {role!r} ({', '.join(found)}); pick one with "
                f"columns={{'{role}': ...}}"
            )
        if found:
            roles[role] = found[0]
            taken.add(found[0])
    for col in avail:
        if col in taken:
            continue
        try:
            au = au_name(col)
        except OmniferError:
            continue
        if au in roles:
            raise OmniferError(
                f"{where} has two columns for {au} ({roles[au]!r} and {col!r}); rename or drop one"
            )
        roles[au] = col
    # tasks
    keep = TASKS if tasks is None else tasks
    if "expression" not in keep:
        roles.pop("expression", None)
    if "va" not in keep:
        roles.pop("valence", None)
        roles.pop("arousal", None)
    if "au" not in keep:
        for role in [r for r in roles if r.startswith("AU")]:
            roles.pop(role)
    if ("valence" in roles) != ("arousal" in roles):
        have, lack = ("valence", "arousal") if "valence" in roles else ("arousal", "valence")
        raise OmniferError(
            f"{where} has a {have} column but no {lack} column; add it, map it with "
            f"columns={{'{lack}': ...}}, or leave va out of tasks"
        )
    if tasks is not None:
        need = {"expression": "expression" in roles, "va": "valence" in roles,
                "au": any(r.startswith("AU") for r in roles)}
        for task in sorted(tasks):
            if not need[task]:
                what = {"expression": "an expression column", "va": "valence/arousal columns",
                        "au": "AU<n> columns"}[task]
                raise OmniferError(
                    f"tasks asks for {task} but {where} has no {what} (columns: "
                    f"{', '.join(map(str, avail))}); map one with columns= or drop the task"
                )
    return roles


def parse_labels(df: pd.DataFrame, roles: Mapping[str, str], *, label_order: LabelOrder,
                  where: str) -> dict[str, Any]:
    """Parse the label columns of ``df``; returns arrays and per-row reasons."""
    n = len(df)
    reasons: list[list[str | None]] = []
    if "expression" in roles:
        expr, r = _parse_expression(df[roles["expression"]], order=label_order,
                                    where=f"{where} column {roles['expression']!r}")
        reasons.append(r)
    else:
        expr = np.full(n, -1, dtype=np.int16)
    nan = np.full(n, np.nan, dtype=np.float32)
    valence, arousal = nan, nan.copy()
    if "valence" in roles:
        valence, r1 = _parse_float(df[roles["valence"]], what="valence", where=where, allowed="va")
        arousal, r2 = _parse_float(df[roles["arousal"]], what="arousal", where=where, allowed="va")
        reasons += [r1, r2]
        one = np.isnan(valence) != np.isnan(arousal)
        pair: list[str | None] = [None] * n
        for i in np.flatnonzero(one):
            if r1[i] is None and r2[i] is None:
                pair[i] = ("valence given without arousal" if np.isnan(arousal[i])
                           else "arousal given without valence") + " (a row needs both or neither)"
        reasons.append(pair)
    aus: dict[str, np.ndarray] = {}
    for role in au_names(r for r in roles if r.startswith("AU")):
        aus[role], r = _parse_float(df[roles[role]], what=role, where=where, allowed="binary")
        reasons.append(r)
    return {"expression": expr, "valence": valence, "arousal": arousal, "au": aus,
            "reasons": merge_reasons(n, *reasons)}
