"""Reading labeled databases: the entry point :func:`read_labeled`, the format registry
:data:`READERS`, and the pipeline every format shares.

Each format lives in its own module of :mod:`omnifer.data.formats` and registers its reader
here (``import omnifer.data`` imports them all). A reader finds the rows of one database and
parses their labels column by column (a bad label marks its row bad), then hands a
:class:`Draft` to :func:`finish`, which reads every image of the remaining rows once to hash it
(the ``sample_id``) and decode it fully (a missing, corrupt or truncated image marks its row
bad). What a bad row does is the ``on_bad_files`` policy (:mod:`omnifer.data.badfiles`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from omnifer.data.badfiles import BadFiles, check_policy
from omnifer.data.images import hash_and_check
from omnifer.data.parse import COLUMN_ROLES, LabelOrder, folder_label, order_mapping
from omnifer.data.table import BadFile, LabeledSet, deduplicate, expression_vocabulary, make_table
from omnifer.errors import OmniferError, one_line
from omnifer.labels import EXPRESSIONS_WITH_CONTEMPT, TASKS, au_name, au_names, dataset_order
from omnifer.registry import Registry

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
#: A reader: ``fn(path, *, name, tasks, label_order, columns, weight, on_bad_files, progress)``;
#: an argument left at ``None`` takes the format's default.
Reader = Callable[..., LabeledSet]

#: Format name -> reader (filled by the modules of :mod:`omnifer.data.formats`).
READERS: Registry[Reader] = Registry("data format")

#: Names a manifest file may have that say nothing about the database (its folder names it).
_GENERIC_STEMS = frozenset({"labels", "label", "manifest", "metadata", "annotations", "data",
                            "train", "test", "val", "valid", "validation"})
_CONTEMPT = EXPRESSIONS_WITH_CONTEMPT.index("contempt")
_CHUNK = 256
_FIX = "fix or remove it, or set on_bad_files='skip' (or 'warn') to drop such rows"


def register_reader(name: str) -> Callable[[Reader], Reader]:
    """Register a reader under a format name (used by :func:`read_labeled`'s ``format``)."""
    return READERS.register(name)


def get_reader(name: str) -> Reader:
    """The reader registered as ``name``; an unknown name raises with the valid names."""
    return READERS.get(str(name).strip().lower())


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

    ``format`` is ``folder``, ``csv``, ``parquet``, ``hf``, ``hub`` or ``toml``; inferred from
    ``path`` when omitted. ``name`` is the source name (default: the folder or file name). ``tasks``
    keeps only some of ``expression``, ``va``, ``au`` (the others become missing).
    ``label_order`` says how integer expression labels are numbered (``canonical``,
    ``affectnet``, ``fer2013``, ``rafdb``, ``expw``, ``affwild2`` or a mapping int -> name).
    ``columns`` renames source columns: ``{"image": "file", "expression": "label"}``.
    ``on_bad_files`` is ``error`` (default), ``warn`` or ``skip``; for a TOML file the default
    is the file's own ``on_bad_files``. ``progress(done, total)`` is called as images are read.
    """
    path = Path(os.path.expanduser(os.fspath(path)))
    policy = check_policy(on_bad_files) if on_bad_files is not None else None
    order = check_label_order(label_order)
    fmt, path = _resolve_format(path, format, order)
    return get_reader(fmt)(
        path,
        name=name,
        tasks=normalize_tasks(tasks),
        label_order=order,
        columns=check_columns(columns),
        weight=check_weight(weight),
        on_bad_files=policy,
        progress=progress,
    )


def infer_format(path: str | os.PathLike) -> str:
    """The format ``read_labeled`` would use for ``path``."""
    return _resolve_format(Path(path), None)[0]


def _resolve_format(path: Path, fmt: str | None,
                    label_order: LabelOrder = None) -> tuple[str, Path]:
    if fmt is not None:
        key = str(fmt).strip().lower()
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
    if is_published(path):
        return "hub", path
    if is_saved_dataset(path):
        return "hf", path
    subdirs = [d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if subdirs and all(folder_label(d.name, label_order) is not None for d in subdirs):
        return "folder", path
    manifests = sorted(
        p for p in path.iterdir()
        if p.is_file() and p.suffix.lower() in (".csv", ".tsv", ".parquet", ".pq", ".toml")
    )
    if len(manifests) == 1:
        return _resolve_format(manifests[0], None)
    if subdirs and any(folder_label(d.name, label_order) is not None for d in subdirs):
        return "folder", path  # the folder reader names the folders that are not classes
    shown = ", ".join(sorted(d.name for d in subdirs)[:5]) + (", ..." if len(subdirs) > 5 else "")
    raise OmniferError(
        f"cannot tell what {path} holds: no expression class folders"
        + (f" (its folders are {shown})" if subdirs else "")
        + f", no saved dataset and {len(manifests)} manifest files; pass the manifest or .toml "
        "file itself, or format="
    )


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``datasets``' ``save_to_disk``."""
    return any((path / f).is_file() for f in ("dataset_info.json", "state.json",
                                              "dataset_dict.json"))


def is_published(path: Path) -> bool:
    """Whether ``path`` is a folder in the Hub layout (``data/*.parquet``, as ``omnifer
    publish`` writes it or a Hub dataset repo is downloaded)."""
    return (path / "data").is_dir() and any((path / "data").glob("*.parquet"))


def default_name(path: Path) -> str:
    """Source name for ``path``: the folder name, or the file name without suffix (the
    folder's name for generic file names such as ``labels.csv``)."""
    path = Path(os.path.abspath(path))
    if path.is_dir():
        return path.name
    stem = path.stem
    return path.parent.name if stem.lower() in _GENERIC_STEMS and path.parent.name else stem


# ====================================================================== argument checks

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
        return order_mapping(order)
    dataset_order(str(order))  # raises for an unknown name
    return str(order)


def check_columns(columns: Mapping[str, str] | None) -> dict[str, str] | None:
    if columns is None:
        return None
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
class Draft:
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


def _workers() -> int:
    return max(2, min(16, (os.cpu_count() or 2) * 4))


def finish(d: Draft, *, weight: float, on_bad_files: str | None,
           progress: Progress | None) -> LabeledSet:
    """Read, hash and check the images of ``d``'s good rows; the ``LabeledSet`` of the rows
    that passed, with the bad ones (policy ``on_bad_files``, default ``error``) in ``bad``."""
    n = d.n
    bad = BadFiles(on_bad_files or "error", fix=_FIX, what="bad row")
    order: list[int] = []  # row index of each bad row, in the order they were found
    ok = np.ones(n, dtype=bool)

    def drop(i: int, reason: str) -> None:
        path, row = d.where(i)
        bad.add(BadFile(source=d.source, path=path, row=row, reason=one_line(reason)))
        order.append(i)
        ok[i] = False

    if d.reasons is not None:
        for i, reason in enumerate(d.reasons):
            if reason is not None:
                drop(i, reason)
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
                        drop(i, reason)
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
    bad.close(d.source)
    bads = tuple(b for _, b in sorted(zip(order, bad.items), key=lambda x: x[0]))
    log.info("%s: %d samples read, %d bad rows dropped", d.source, len(keep), len(bads))
    return deduplicate(LabeledSet(
        table=table,
        expressions=expression_vocabulary(has_contempt),
        aus=au_names(d.au),
        bad=bads,
        sources=(d.source,),
    ))
