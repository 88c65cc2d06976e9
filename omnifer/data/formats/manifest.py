"""A manifest: a table with an image column (paths relative to the file) and label columns,
stored as CSV/TSV (:mod:`.csv`) or Parquet (:mod:`.parquet`). This module reads the table once
it is loaded; the format modules load it."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

from omnifer.data.parse import LabelOrder, is_missing, merge_reasons, parse_labels, resolve_columns
from omnifer.data.readers import Draft, Progress, Reader, default_name, finish
from omnifer.data.table import LabeledSet
from omnifer.errors import OmniferError

log = logging.getLogger(__name__)


def manifest_reader(fmt: str, load: Callable[[Path], pd.DataFrame]) -> Reader:
    """The reader of format ``fmt``, whose manifest file ``load`` turns into a table."""

    def read(path: Path, *, name: str | None = None, tasks: frozenset[str] | None = None,
             label_order: LabelOrder = None, columns: Mapping[str, str] | None = None,
             weight: float = 1.0, on_bad_files: str | None = None,
             progress: Progress | None = None) -> LabeledSet:
        path = Path(os.path.abspath(path))
        if not path.is_file():
            raise OmniferError(f"{path} is not a file; the {fmt} format needs a manifest file")
        return read_manifest(load(path), path, name=default_name(path) if name is None else name,
                             tasks=tasks, label_order=label_order, columns=columns or {},
                             weight=weight, on_bad_files=on_bad_files, progress=progress)

    read.__name__ = f"read_{fmt}"
    read.__doc__ = f"A {fmt} manifest: an image column (paths relative to the file) and label columns."
    return read


def read_manifest(df: pd.DataFrame, path: Path, *, name: str, tasks: frozenset[str] | None,
                  label_order: LabelOrder, columns: Mapping[str, str], weight: float,
                  on_bad_files: str | None, progress: Progress | None) -> LabeledSet:
    """The ``LabeledSet`` of manifest table ``df``, read from the file ``path``."""
    where = str(path)
    df = df.reset_index(drop=True)
    roles = resolve_columns([str(c) for c in df.columns], columns, tasks, where)
    if "image" not in roles:
        raise OmniferError(
            f"{where} has no image column (columns: {', '.join(map(str, df.columns))}); name it "
            "image or map it with columns={'image': '<column>'}"
        )
    if not any(r != "image" for r in roles):
        log.warning("%s: %s has no label columns; its samples carry no labels", name, where)
    labels = parse_labels(df, roles, label_order=label_order, where=where)
    base = path.parent
    refs: list[str] = []
    image_reasons: list[str | None] = []
    for v in df[roles["image"]].tolist():
        if isinstance(v, (bytes, bytearray, dict)):
            raise OmniferError(
                f"{where} column {roles['image']!r} holds embedded image data, not paths; "
                "save it with datasets.Dataset.save_to_disk and read it with format='hf'"
            )
        if is_missing(v):
            refs.append("")
            image_reasons.append("no image path in this row")
            continue
        p = os.path.expanduser(str(v).strip())
        refs.append(os.path.normpath(p if os.path.isabs(p) else os.path.join(base, p)))
        image_reasons.append(None)
    draft = Draft(
        source=name,
        refs=refs,
        images=lambda rows: [refs[i] for i in rows],
        where=lambda i: (where, i),
        expression=labels["expression"],
        valence=labels["valence"],
        arousal=labels["arousal"],
        au=labels["au"],
        reasons=merge_reasons(len(df), image_reasons, [
            None if r is None else f"{r} (image {v})"
            for r, v in zip(labels["reasons"], df[roles["image"]].tolist())]),
    )
    return finish(draft, weight=weight, on_bad_files=on_bad_files, progress=progress)
