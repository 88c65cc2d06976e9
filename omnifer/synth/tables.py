"""Shared pieces of the benchmark's label files: Parquet writing, AU columns, schema metadata,
chunk concatenation and the ``[[database]]`` entries of the TOML descriptions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from omnifer.artifacts import atomic_path
from omnifer.labels import EXPRESSIONS
from omnifer.synth.faces import AUS, au_binary


def write_parquet(path: Path, table) -> None:
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def au_columns(au: np.ndarray, threshold: float, present: np.ndarray | None = None) -> dict:
    """``AU<n>`` (int8 0/1) and ``AU<n>_intensity`` (float32) arrays, null where absent."""
    import pyarrow as pa

    binary = au_binary(au, threshold)
    cols = {}
    mask = None if present is None else ~np.asarray(present, bool)
    for j, name in enumerate(AUS):
        cols[name] = pa.array(binary[:, j].astype(np.int8), mask=mask)
    for j, name in enumerate(AUS):
        cols[f"{name}_intensity"] = pa.array(au[:, j].astype(np.float32), mask=mask)
    return cols


def schema_meta(extra: dict | None = None) -> dict[bytes, bytes]:
    """Schema metadata of every table: the label vocabularies and the generator."""
    meta = {"omnifer.expressions": json.dumps(list(EXPRESSIONS)),
            "omnifer.aus": json.dumps(list(AUS)), "omnifer.source": "omnifer synth"}
    meta.update(extra or {})
    return {k.encode(): v.encode() for k, v in meta.items()}


def concat(chunks: list[dict], key: str) -> np.ndarray | list:
    """Column ``key`` of the label chunks of one split, in chunk order."""
    parts = [c[key] for c in chunks]
    if isinstance(parts[0], list):
        return [x for p in parts for x in p]
    return np.concatenate(parts) if parts else np.array([])


def toml_database(name: str, path: str, fmt: str, tasks: list[str]) -> str:
    """One ``[[database]]`` entry of a labeled-data TOML file."""
    tasks_s = ", ".join(f'"{t}"' for t in tasks)
    return (f'[[database]]\nname = "{name}"\npath = "{path}"\nformat = "{fmt}"\n'
            f'tasks = [{tasks_s}]\nlabel_order = "canonical"\n')
