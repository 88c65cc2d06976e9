"""Readers of labeled databases: class folders, CSV/Parquet manifests, saved ``datasets``.

Every reader turns one database into a :class:`~omnifer.data.table.LabeledSet`. They share
one pipeline: find the rows, parse the labels column by column (a bad label marks its row
bad), then read every image of the remaining rows once to hash it (the ``sample_id``) and
decode it fully (a missing, corrupt or truncated image marks its row bad). What a bad row does
is the ``on_bad_files`` policy: ``error`` raises, ``warn`` logs and drops, ``skip`` drops.

:data:`READERS` maps a format name to its reader; :func:`read_labeled` is the entry point.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omnifer.data.images import (
    IMAGE_EXTENSIONS,
    Unreadable,
    hash_and_check,
    hf_ref,
    image_value_bytes,
)
from omnifer.data.table import (
    ON_BAD_FILES,
    BadFile,
    LabeledSet,
    expression_vocabulary,
    make_table,
)
from omnifer.errors import OmniferError, one_line
from omnifer.labels import (
    DATASET_ORDERS,
    EXPRESSIONS_WITH_CONTEMPT,
    NOT_AN_EXPRESSION,
    TASKS,
    VA_RANGE,
    au_name,
    au_names,
    canonical_expression,
    dataset_order,
    expression_index,
)

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
LabelOrder = str | Mapping[int, str] | None
#: A reader: ``fn(path, *, name, tasks, label_order, columns, weight, on_bad_files, progress)``.
Reader = Callable[..., LabeledSet]

READERS: dict[str, Reader] = {}

#: Label columns of a manifest / ``hf`` dataset besides ``AU<n>``.
LABEL_COLUMNS: tuple[str, ...] = ("expression", "valence", "arousal")
#: Keys ``columns=`` accepts besides ``AU<n>``.
COLUMN_ROLES: tuple[str, ...] = ("image", *LABEL_COLUMNS)
#: Names a manifest file may have that say nothing about the database (its folder names it).
_GENERIC_STEMS = frozenset({"labels", "label", "manifest", "metadata", "annotations", "data",
                            "train", "test", "val", "valid", "validation"})
_CONTEMPT = EXPRESSIONS_WITH_CONTEMPT.index("contempt")
_CHUNK = 256
_MAX_WARNINGS = 20
_FIX = "fix or remove it, or set on_bad_files='skip' (or 'warn') to drop such rows"


def register_reader(name: str) -> Callable[[Reader], Reader]:
    """Register a reader under a format name (used by :func:`read_labeled`'s ``format``)."""

    def wrap(fn: Reader) -> Reader:
        READERS[name] = fn
        return fn

    return wrap


def get_reader(name: str) -> Reader:
    """The reader registered as ``name``; an unknown name raises with the valid names."""
    key = str(name).strip().lower()
    if key not in READERS:
        raise OmniferError(
            f"unknown data format {name!r}; valid formats are {', '.join(READERS)} "
            "(or toml for a description of several databases)"
        )
    return READERS[key]


# ====================================================================== entry point

def read_labeled(
    path: str | os.PathLike,
    *,
    format: str | None = None,  # noqa: A002 - the documented argument name
    name: str | None = None,
    tasks: Iterable[str] | str | None = None,
    label_order: LabelOrder = None,
    weight: float = 1.0,
    columns: Mapping[str, str] | None = None,
    on_bad_files: str | None = None,
    progress: Progress | None = None,
) -> LabeledSet:
    """Read one labeled database (or a TOML description of several) into a ``LabeledSet``.

    ``format`` is ``folder``, ``csv``, ``parquet``, ``hf`` or ``toml``; inferred from ``path``
    when omitted. ``name`` is the source name (default: the folder or file name). ``tasks``
    keeps only some of ``expression``, ``va``, ``au`` (the others become missing).
    ``label_order`` says how integer expression labels are numbered (``canonical``,
    ``affectnet``, ``fer2013``, ``rafdb``, ``expw``, ``affwild2`` or a mapping int -> name).
    ``columns`` renames source columns: ``{"image": "file", "expression": "label"}``.
    ``on_bad_files`` is ``error`` (default), ``warn`` or ``skip``; for a TOML file the default
    is the file's own ``on_bad_files``. ``progress(done, total)`` is called as images are read.
    """
    path = Path(os.path.expanduser(os.fspath(path)))
    policy = check_policy(on_bad_files) if on_bad_files is not None else None
    fmt, path = _resolve_format(path, format, check_label_order(label_order))
    if fmt == "toml":
        extra = {k: v for k, v in (("name", name), ("tasks", tasks), ("label_order", label_order),
                                   ("columns", columns)) if v is not None}
        if weight != 1.0:
            extra["weight"] = weight
        if extra:
            raise OmniferError(
                f"{', '.join(extra)} cannot be given with a TOML description ({path}); set them "
                "per [[database]] in the file"
            )
        from omnifer.data.spec import read_spec

        return read_spec(path, on_bad_files=policy, progress=progress)
    reader = get_reader(fmt)
    return reader(
        path,
        name=name if name is not None else default_name(path),
        tasks=normalize_tasks(tasks),
        label_order=check_label_order(label_order),
        columns=check_columns(columns),
        weight=check_weight(weight),
        on_bad_files=policy or "error",
        progress=progress,
    )


def infer_format(path: str | os.PathLike) -> str:
    """The format ``read_labeled`` would use for ``path``."""
    return _resolve_format(Path(path), None)[0]


def _resolve_format(path: Path, fmt: str | None,
                    label_order: LabelOrder = None) -> tuple[str, Path]:
    if fmt is not None:
        key = str(fmt).strip().lower()
        if key in ("toml", "spec"):
            return "toml", path
        get_reader(key)  # raises for an unknown name
        if not path.exists():
            raise OmniferError(f"{path} does not exist; check the path")
        return key, path
    if not path.exists():
        raise OmniferError(f"{path} does not exist; check the path")
    if path.is_file():
        suffix = path.suffix.lower()
        by_suffix = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet",
                     ".toml": "toml"}
        if suffix in by_suffix:
            return by_suffix[suffix], path
        raise OmniferError(
            f"cannot tell the format of {path} from its suffix {suffix or '(none)'}; use a "
            ".csv, .parquet or .toml file, a folder, or pass format="
        )
    if _is_saved_dataset(path):
        return "hf", path
    subdirs = [d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if subdirs and all(_folder_label(d.name, label_order) is not None for d in subdirs):
        return "folder", path
    manifests = sorted(
        p for p in path.iterdir()
        if p.is_file() and p.suffix.lower() in (".csv", ".tsv", ".parquet", ".pq", ".toml")
    )
    if len(manifests) == 1:
        return _resolve_format(manifests[0], None)
    if subdirs and any(_folder_label(d.name, label_order) is not None for d in subdirs):
        return "folder", path  # the folder reader names the folders that are not classes
    shown = ", ".join(sorted(d.name for d in subdirs)[:5]) + (", ..." if len(subdirs) > 5 else "")
    raise OmniferError(
        f"cannot tell what {path} holds: no expression class folders"
        + (f" (its folders are {shown})" if subdirs else "")
        + f", no saved dataset and {len(manifests)} manifest files; pass the manifest or .toml "
        "file itself, or format="
    )


def _is_saved_dataset(path: Path) -> bool:
    return any((path / f).is_file() for f in ("dataset_info.json", "state.json",
                                              "dataset_dict.json"))


def default_name(path: Path) -> str:
    """Source name for ``path``: the folder name, or the file name without suffix (the
    folder's name for generic file names such as ``labels.csv``)."""
    path = Path(os.path.abspath(path))
    if path.is_dir():
        return path.name
    stem = path.stem
    return path.parent.name if stem.lower() in _GENERIC_STEMS and path.parent.name else stem


# ====================================================================== argument checks

def check_policy(value: str) -> str:
    key = str(value).strip().lower()
    if key not in ON_BAD_FILES:
        raise OmniferError(
            f"on_bad_files={value!r} is not a policy; use one of {', '.join(ON_BAD_FILES)}"
        )
    return key


def normalize_tasks(tasks: Iterable[str] | str | None) -> frozenset[str] | None:
    if tasks is None:
        return None
    items = [tasks] if isinstance(tasks, str) else list(tasks)
    out = set()
    for t in items:
        key = str(t).strip().lower()
        if key not in TASKS:
            raise OmniferError(f"unknown task {t!r}; valid tasks are {', '.join(TASKS)}")
        out.add(key)
    if not out:
        raise OmniferError(f"tasks is empty; name at least one of {', '.join(TASKS)}")
    return frozenset(out)


def check_label_order(order: LabelOrder) -> LabelOrder:
    if order is None:
        return None
    if isinstance(order, Mapping):
        try:
            return {int(k): str(v) for k, v in order.items()}
        except (TypeError, ValueError):
            raise OmniferError(
                f"label_order mapping {dict(order)!r} must map integers to expression names"
            ) from None
    dataset_order(str(order))  # raises for an unknown name
    return str(order)


def check_columns(columns: Mapping[str, str] | None) -> dict[str, str]:
    if columns is None:
        return {}
    if not isinstance(columns, Mapping):
        raise OmniferError(
            f"columns must map omnifer names to source columns, e.g. {{'image': 'file'}}; "
            f"got {columns!r}"
        )
    out: dict[str, str] = {}
    for key, value in columns.items():
        role = str(key).strip()
        if role.lower() in COLUMN_ROLES:
            role = role.lower()
        else:
            try:
                role = au_name(role)
            except OmniferError:
                raise OmniferError(
                    f"columns has the unknown key {key!r}; valid keys are "
                    f"{', '.join(COLUMN_ROLES)} and AU<n> (e.g. AU12)"
                ) from None
        if not isinstance(value, str):
            raise OmniferError(f"columns[{key!r}] must be a column name; got {value!r}")
        out[role] = value
    return out


def check_weight(weight: Any) -> float:
    try:
        w = float(weight)
    except (TypeError, ValueError):
        w = float("nan")
    if not math.isfinite(w) or w < 0:
        raise OmniferError(f"weight {weight!r} is not a number >= 0; use e.g. weight = 1.0")
    return w


# ====================================================================== the shared pipeline

@dataclass
class _Draft:
    """What a reader found, before the images are read."""

    source: str
    refs: list[str]  # image reference per row
    images: Callable[[list[int]], list[bytes | str]]  # bytes, or a path to read, per row
    where: Callable[[int], tuple[str, int | None]]  # BadFile (path, row) of a row
    expression: np.ndarray  # int16, -1 missing
    valence: np.ndarray  # float32, NaN missing
    arousal: np.ndarray
    au: dict[str, np.ndarray] = field(default_factory=dict)
    reasons: list[str | None] | None = None  # label problems per row
    declares_contempt: bool = False

    @property
    def n(self) -> int:
        return len(self.refs)


class _BadRows:
    """Applies the ``on_bad_files`` policy and records what was dropped."""

    def __init__(self, policy: str, source: str) -> None:
        self.policy = policy
        self.source = source
        self.items: list[tuple[int, BadFile]] = []

    def add(self, index: int, path: str, row: int | None, reason: str) -> None:
        bad = BadFile(source=self.source, path=path, row=row, reason=one_line(reason))
        if self.policy == "error":
            raise OmniferError(f"{bad}; {_FIX}")
        if self.policy == "warn" and len(self.items) < _MAX_WARNINGS:
            log.warning("skipping %s", bad)
        self.items.append((index, bad))

    def result(self) -> tuple[BadFile, ...]:
        if self.policy == "warn" and len(self.items) > _MAX_WARNINGS:
            log.warning("%s: skipped %d more bad rows (%d in all)", self.source,
                        len(self.items) - _MAX_WARNINGS, len(self.items))
        return tuple(b for _, b in sorted(self.items, key=lambda x: x[0]))


def _workers() -> int:
    return max(2, min(16, (os.cpu_count() or 2) * 4))


def _finish(d: _Draft, *, weight: float, on_bad_files: str,
            progress: Progress | None) -> LabeledSet:
    n = d.n
    bad = _BadRows(on_bad_files, d.source)
    ok = np.ones(n, dtype=bool)
    if d.reasons is not None:
        for i, reason in enumerate(d.reasons):
            if reason is not None:
                path, row = d.where(i)
                bad.add(i, path, row, reason)
                ok[i] = False
    rows = np.flatnonzero(ok)
    total = len(rows)
    sample_ids: list[str | None] = [None] * n
    if progress is not None:
        progress(0, total)
    if total:
        with ThreadPoolExecutor(max_workers=_workers(), thread_name_prefix="omnifer-read") as pool:
            for start in range(0, total, _CHUNK):
                chunk = rows[start:start + _CHUNK].tolist()
                items = d.images(chunk)
                for i, (sid, reason) in zip(chunk, pool.map(hash_and_check, items)):
                    if reason is not None:
                        path, row = d.where(i)
                        bad.add(i, path, row, reason)
                        ok[i] = False
                    else:
                        sample_ids[i] = sid
                if progress is not None:
                    progress(min(start + _CHUNK, total), total)
    keep = np.flatnonzero(ok)
    table = make_table(
        sample_id=[sample_ids[i] for i in keep],
        image=[d.refs[i] for i in keep],
        source=d.source,
        expression=d.expression[keep],
        valence=d.valence[keep],
        arousal=d.arousal[keep],
        au={a: v[keep] for a, v in d.au.items()},
        weight=weight,
    )
    has_contempt = d.declares_contempt or bool((d.expression[keep] == _CONTEMPT).any())
    bads = bad.result()
    log.info("%s: %d samples read, %d bad rows dropped", d.source, len(keep), len(bads))
    return LabeledSet(
        table=table,
        expressions=expression_vocabulary(has_contempt),
        aus=au_names(d.au),
        bad=bads,
        sources=(d.source,),
    )


# ====================================================================== label parsing

def _is_missing(v: Any) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    if isinstance(v, (float, np.floating)):
        return math.isnan(v)
    if isinstance(v, str):
        return not v.strip()
    return False


def _folder_label(name: str, order: LabelOrder = None) -> int | None:
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
        if _is_missing(v):
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


def _merge_reasons(n: int, *lists: Sequence[str | None]) -> list[str | None]:
    out: list[str | None] = [None] * n
    for reasons in lists:
        for i, r in enumerate(reasons):
            if r is not None:
                out[i] = r if out[i] is None else f"{out[i]}; {r}"
    return out


def _resolve_columns(available: Sequence[str], columns: Mapping[str, str],
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


def _parse_labels(df: pd.DataFrame, roles: Mapping[str, str], *, label_order: LabelOrder,
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
            "reasons": _merge_reasons(n, *reasons)}


# ====================================================================== folder

@register_reader("folder")
def read_folder(path: Path, *, name: str, tasks: frozenset[str] | None = None,
                label_order: LabelOrder = None, columns: Mapping[str, str] | None = None,
                weight: float = 1.0, on_bad_files: str = "error",
                progress: Progress | None = None) -> LabeledSet:
    """``ROOT/<expression name>/**/<image>``: expression labels from the class-folder names."""
    root = Path(os.path.abspath(path))
    if not root.is_dir():
        raise OmniferError(f"{root} is not a folder; the folder format needs ROOT/<class>/<image>")
    if columns:
        raise OmniferError(f"columns= does not apply to a class-folder tree ({root}); drop it")
    if tasks is not None and tasks != {"expression"}:
        raise OmniferError(
            f"{root} is a class-folder tree, which carries expression labels only; tasks "
            f"{sorted(tasks)} asks for more or other tasks (use tasks = [\"expression\"])"
        )
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise OmniferError(
            f"{root} has no class folders; put images in ROOT/<expression>/ "
            f"(e.g. {root / 'happiness'})"
        )
    files: list[str] = []
    labels: list[int] = []
    declares_contempt = False
    for d in class_dirs:
        idx = _folder_label(d.name, label_order)
        if idx is None:
            if (isinstance(label_order, str) and d.name.strip().lstrip("-").isdigit()
                    and int(d.name) in NOT_AN_EXPRESSION.get(label_order.lower(), ())):
                log.warning("%s: folder %s is not an expression in the %s order; skipped",
                            name, d.name, label_order)
                continue
            raise OmniferError(
                f"class folder {d.name!r} in {root} is not an expression; name the folders "
                f"{', '.join(EXPRESSIONS_WITH_CONTEMPT)} (or synonyms such as happy, angry, sad)"
                + ("" if label_order else ", or numbers with label_order set")
            )
        declares_contempt |= idx == _CONTEMPT
        found = _images_below(d)
        files.extend(found)
        labels.extend([idx] * len(found))
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if loose:
        log.warning("%s: %d images directly in %s have no class folder and are ignored",
                    name, len(loose), root)
    if not files:
        raise OmniferError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) below the class folders of {root}"
        )
    n = len(files)
    draft = _Draft(
        source=name,
        refs=files,
        images=lambda rows: [files[i] for i in rows],
        where=lambda i: (files[i], None),
        expression=np.asarray(labels, dtype=np.int16),
        valence=np.full(n, np.nan, dtype=np.float32),
        arousal=np.full(n, np.nan, dtype=np.float32),
        declares_contempt=declares_contempt,
    )
    return _finish(draft, weight=weight, on_bad_files=on_bad_files, progress=progress)


def _images_below(folder: Path) -> list[str]:
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS:
                out.append(os.path.join(dirpath, f))
    return out


# ====================================================================== csv / parquet

def _load_csv(path: Path) -> pd.DataFrame:
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        return pd.read_csv(path, dtype=str, sep=sep, encoding="utf-8-sig", skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise OmniferError(f"{path} is empty; a manifest needs a header row") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise OmniferError(
            f"cannot parse {path} as CSV ({one_line(exc)}); check quoting and delimiters"
        ) from None


def _load_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise OmniferError(
            f"cannot read {path} as Parquet ({one_line(exc)}); check the file"
        ) from None


def _manifest_reader(fmt: str, load: Callable[[Path], pd.DataFrame]) -> Reader:
    def read(path: Path, *, name: str, tasks: frozenset[str] | None = None,
             label_order: LabelOrder = None, columns: Mapping[str, str] | None = None,
             weight: float = 1.0, on_bad_files: str = "error",
             progress: Progress | None = None) -> LabeledSet:
        path = _manifest_file(path, fmt)
        return _read_manifest(load(path), path, name=name, tasks=tasks,
                              label_order=label_order, columns=columns or {}, weight=weight,
                              on_bad_files=on_bad_files, progress=progress)

    read.__name__ = f"read_{fmt}"
    read.__doc__ = f"A {fmt} manifest: an image column (paths relative to the file) and label columns."
    return register_reader(fmt)(read)


#: Manifest readers: the same columns, as CSV (or TSV) or Parquet.
read_csv = _manifest_reader("csv", _load_csv)
read_parquet = _manifest_reader("parquet", _load_parquet)


def _manifest_file(path: Path, fmt: str) -> Path:
    path = Path(os.path.abspath(path))
    if not path.is_file():
        raise OmniferError(f"{path} is not a file; the {fmt} format needs a manifest file")
    return path


def _read_manifest(df: pd.DataFrame, path: Path, *, name: str, tasks: frozenset[str] | None,
                   label_order: LabelOrder, columns: Mapping[str, str], weight: float,
                   on_bad_files: str, progress: Progress | None) -> LabeledSet:
    where = str(path)
    df = df.reset_index(drop=True)
    roles = _resolve_columns([str(c) for c in df.columns], columns, tasks, where)
    if "image" not in roles:
        raise OmniferError(
            f"{where} has no image column (columns: {', '.join(map(str, df.columns))}); name it "
            "image or map it with columns={'image': '<column>'}"
        )
    if not any(r != "image" for r in roles):
        log.warning("%s: %s has no label columns; its samples carry no labels", name, where)
    labels = _parse_labels(df, roles, label_order=label_order, where=where)
    base = path.parent
    refs: list[str] = []
    image_reasons: list[str | None] = []
    for v in df[roles["image"]].tolist():
        if isinstance(v, (bytes, bytearray, dict)):
            raise OmniferError(
                f"{where} column {roles['image']!r} holds embedded image data, not paths; "
                "save it with datasets.Dataset.save_to_disk and read it with format='hf'"
            )
        if _is_missing(v):
            refs.append("")
            image_reasons.append("no image path in this row")
            continue
        p = os.path.expanduser(str(v).strip())
        refs.append(os.path.normpath(p if os.path.isabs(p) else os.path.join(base, p)))
        image_reasons.append(None)
    draft = _Draft(
        source=name,
        refs=refs,
        images=lambda rows: [refs[i] for i in rows],
        where=lambda i: (where, i),
        expression=labels["expression"],
        valence=labels["valence"],
        arousal=labels["arousal"],
        au=labels["au"],
        reasons=_merge_reasons(len(df), image_reasons, [
            None if r is None else f"{r} (image {v})"
            for r, v in zip(labels["reasons"], df[roles["image"]].tolist())]),
    )
    return _finish(draft, weight=weight, on_bad_files=on_bad_files, progress=progress)


# ====================================================================== hf (save_to_disk)

@register_reader("hf")
def read_hf(path: Path, *, name: str, tasks: frozenset[str] | None = None,
            label_order: LabelOrder = None, columns: Mapping[str, str] | None = None,
            weight: float = 1.0, on_bad_files: str = "error",
            progress: Progress | None = None) -> LabeledSet:
    """A ``datasets.Dataset.save_to_disk`` folder with an ``Image`` column."""
    from datasets import ClassLabel, Value, load_from_disk
    from datasets import Image as HFImage

    from omnifer.data import images as _images

    root = os.path.abspath(path)
    if not os.path.isdir(root):
        raise OmniferError(f"{root} is not a folder; the hf format needs a save_to_disk folder")
    try:
        ds = load_from_disk(root)
    except FileNotFoundError as exc:
        raise OmniferError(
            f"{root} is not a saved datasets folder ({one_line(exc)}); write it with "
            "Dataset.save_to_disk"
        ) from None
    if not hasattr(ds, "features"):
        splits = list(ds)
        raise OmniferError(
            f"{root} holds several splits ({', '.join(splits)}); point to one split folder, "
            f"e.g. {os.path.join(root, splits[0])}"
        )
    _images._open_hf.cache_clear()  # load_image must see this version of the folder
    where = root
    feats = ds.features
    columns = dict(columns or {})
    class_labels = [c for c, f in feats.items() if isinstance(f, ClassLabel)]
    if ("expression" not in columns and "expression" not in ds.column_names
            and len(class_labels) == 1 and (tasks is None or "expression" in tasks)):
        columns["expression"] = class_labels[0]  # e.g. the conventional "label" ClassLabel
    roles = _resolve_columns(list(ds.column_names), columns, tasks, where)
    image_cols = [c for c, f in feats.items() if isinstance(f, HFImage)]
    col = roles.get("image")
    if col is None:
        if len(image_cols) != 1:
            raise OmniferError(
                f"{where} has {len(image_cols)} Image columns ({', '.join(image_cols) or 'none'}); "
                "name one with columns={'image': '<column>'}"
            )
        col = image_cols[0]
    elif col not in image_cols:
        raise OmniferError(
            f"{where} column {col!r} is {feats[col]!r}, not an Image feature; cast it with "
            "dataset.cast_column(column, datasets.Image()) before save_to_disk"
        )
    roles["image"] = col
    label_cols = [c for r, c in roles.items() if r != "image"]
    if not label_cols:
        log.warning("%s: %s has no label columns; its samples carry no labels", name, where)
    df = ds.select_columns(label_cols).to_pandas() if label_cols else pd.DataFrame(index=range(len(ds)))
    declares_contempt = False
    if "expression" in roles:
        feat = feats[roles["expression"]]
        if isinstance(feat, ClassLabel):
            names = list(feat.names)
            declares_contempt = any(n.strip().lower() == "contempt" for n in names)

            def to_name(v: Any) -> Any:
                if _is_missing(v) or int(v) == -1:
                    return None
                return names[int(v)] if 0 <= int(v) < len(names) else int(v)

            df[roles["expression"]] = df[roles["expression"]].map(to_name).astype(object)
        elif not isinstance(feat, Value):
            raise OmniferError(
                f"{where} column {roles['expression']!r} is {feat!r}; expression needs a "
                "ClassLabel, integers or names"
            )
    labels = _parse_labels(df, roles, label_order=label_order, where=where)
    n = len(ds)
    ref_col = col if len(image_cols) > 1 else None
    refs = [hf_ref(root, i, ref_col) for i in range(n)]
    images_ds = ds.select_columns([col]).with_format("arrow")

    def fetch(rows: list[int]) -> list[bytes | str]:
        values = images_ds[rows].column(col).to_pylist()
        out: list[bytes | str] = []
        for v in values:
            try:
                out.append(image_value_bytes(v, base=root))
            except FileNotFoundError:
                missing = v.get("path") if isinstance(v, dict) else None
                out.append(Unreadable(
                    f"image file not found: {os.path.join(root, missing)}" if missing
                    else "no image in this row"))
            except OSError as exc:
                out.append(Unreadable(f"cannot read the image ({one_line(exc)})"))
        return out

    draft = _Draft(
        source=name,
        refs=refs,
        images=fetch,
        where=lambda i: (where, i),
        expression=labels["expression"],
        valence=labels["valence"],
        arousal=labels["arousal"],
        au=labels["au"],
        reasons=labels["reasons"],
        declares_contempt=declares_contempt,
    )
    return _finish(draft, weight=weight, on_bad_files=on_bad_files, progress=progress)
