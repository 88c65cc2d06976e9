"""The ``hub`` format: Parquet with the images embedded, as on the Hugging Face Hub: a folder in
the Hub layout (``data/{split}-{i:05d}-of-{n:05d}.parquet``, e.g. from ``omnifer publish`` or a
downloaded dataset repo; its ``train`` split, or every file when it has none) or one such
Parquet file. Image references are ``<file.parquet>::<row>``; a single ``ClassLabel`` column
serves as the expression. ``sample_id``, ``source`` and ``weight`` columns, as omnifer
publishes them, are kept."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omnifer.data.formats.hf import class_label_names, default_expression
from omnifer.data.images import Unreadable, hf_ref, read_image_bytes
from omnifer.data.parse import LabelOrder, parse_labels, resolve_columns
from omnifer.data.readers import Draft, Progress, default_name, finish, register_reader
from omnifer.data.table import LabeledSet
from omnifer.errors import OmniferError, one_line

_SHARD = re.compile(r"^(?P<split>.+?)-\d{5}-of-\d{5}\.parquet$")
#: Columns omnifer publishes that the sample table takes back as they are.
KEPT = ("sample_id", "source", "weight")


def split_of(path: Path) -> str | None:
    m = _SHARD.match(path.name)
    return m.group("split") if m else None


def hub_files(path: Path) -> list[Path]:
    """The Parquet files of a Hub-layout folder's ``train`` split (every file when it has no
    split named train), or ``[path]`` for a file."""
    if path.is_file():
        return [path]
    files = sorted((path / "data").glob("*.parquet"))
    if not files:
        raise OmniferError(f"{path} has no data/*.parquet; the hub format reads a folder in the "
                           "Hub layout (data/train-00000-of-00001.parquet, ...) or one Parquet file")
    return [f for f in files if split_of(f) == "train"] or files


def embedded_column(schema: Any, wanted: str | None = None) -> str | None:
    """The column holding embedded images (binary, or a ``{bytes, path}`` struct), if any."""
    import pyarrow as pa

    def embedded(t: Any) -> bool:
        return (pa.types.is_binary(t) or pa.types.is_large_binary(t)
                or (pa.types.is_struct(t) and t.get_field_index("bytes") >= 0))

    if wanted is not None:
        return wanted if wanted in schema.names and embedded(schema.field(wanted).type) else None
    found = [f.name for f in schema if embedded(f.type)]
    return "image" if "image" in found else (found[0] if len(found) == 1 else None)


def features_of(schema: Any) -> Any:
    """The ``datasets`` features a file declares (plain ones read from its arrow types)."""
    from datasets import Features

    return Features.from_arrow_schema(schema)


@register_reader("hub")
def read_hub(path: Path, *, name: str | None = None, tasks: frozenset[str] | None = None,
             label_order: LabelOrder = None, columns: Mapping[str, str] | None = None,
             weight: float = 1.0, on_bad_files: str | None = None,
             progress: Progress | None = None) -> LabeledSet:
    """Parquet with embedded images: a Hub-layout folder or one file."""
    import pyarrow.parquet as pq

    root = Path(os.path.abspath(path))
    if not root.exists():
        raise OmniferError(f"{root} does not exist; check the path")
    columns = dict(columns or {})
    wanted = columns.pop("image", None)
    frames, refs, feats, image_col = [], [], None, None
    for f in hub_files(root):
        try:
            schema = pq.read_schema(f)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise OmniferError(f"cannot read {f} as Parquet ({one_line(exc)}); check the file"
                               ) from None
        col = embedded_column(schema, wanted)
        if col is None:
            raise OmniferError(f"{f} has no column of embedded images (columns: "
                               f"{', '.join(schema.names)}); name it with columns={{'image': "
                               "'<column>'}}, or read a manifest of paths with format='parquet'")
        if image_col not in (None, col) or (feats is not None and feats != features_of(schema)):
            raise OmniferError(f"{f} has other columns than {hub_files(root)[0]}; read the files "
                               "one by one")
        image_col, feats = col, features_of(schema)
        frame = pq.read_table(f, columns=[c for c in schema.names if c != col]).to_pandas()
        refs += [hf_ref(str(f), i, None if col == "image" else col) for i in range(len(frame))]
        frames.append(frame)
    df = pd.concat(frames, ignore_index=True)
    where = str(root)
    named = name is not None
    name = default_name(root) if name is None else name
    default_expression(columns, {c: feats[c] for c in df.columns}, tasks)
    label_cols = [c for c in df.columns if c not in KEPT]
    roles = resolve_columns(label_cols, columns, tasks, where)
    roles.pop("image", None)
    declares_contempt = class_label_names(df, roles, feats, where)
    labels = parse_labels(df, roles, label_order=label_order, where=where)

    def fetch(rows: list[int]) -> list[bytes | str]:
        out: list[bytes | str] = []
        for i in rows:
            try:
                out.append(read_image_bytes(refs[i]))
            except OmniferError as exc:
                out.append(Unreadable(str(exc)))
        return out

    draft = Draft(source=name, refs=refs, images=fetch, where=lambda i: (refs[i], None),
                  expression=labels["expression"], valence=labels["valence"],
                  arousal=labels["arousal"], au=labels["au"], reasons=labels["reasons"],
                  declares_contempt=declares_contempt)
    data = finish(draft, weight=weight, on_bad_files=on_bad_files, progress=progress)
    return keep_published(data, df, refs, weight=weight, source=name if named else None)


def keep_published(data: LabeledSet, df: pd.DataFrame, refs: list[str], *, weight: float,
                   source: str | None) -> LabeledSet:
    """``data`` with the ``sample_id``, ``source`` and ``weight`` columns the files carry, so
    that a published set reads back as the sample table it was published from."""
    kept = [c for c in KEPT if c in df.columns]
    if not kept:
        return data
    row = {r: i for i, r in enumerate(refs)}
    rows = np.asarray([row[r] for r in data.table["image"]], dtype=np.int64)
    table = data.table.copy()
    if "sample_id" in kept:
        table["sample_id"] = df["sample_id"].astype(str).to_numpy()[rows]
    if "source" in kept and source is None:
        table["source"] = df["source"].astype(str).to_numpy()[rows]
    if "weight" in kept:
        table["weight"] = df["weight"].to_numpy(np.float32)[rows] * np.float32(weight)
    sources = tuple(dict.fromkeys(table["source"])) or data.sources
    bad = tuple(dataclasses.replace(b, source=sources[0]) for b in data.bad) \
        if len(sources) == 1 else data.bad
    return dataclasses.replace(data, table=table, sources=sources, bad=bad)
