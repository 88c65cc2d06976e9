"""Embedding shards: ``shards/shard-NNNNN.parquet`` (one row per pool item or detected face)
plus ``shards/shard-NNNNN.npy`` (float16 embeddings of the ``ok`` rows, in order).

Table columns: ``key``, ``id`` = content hash of the image bytes, ``face`` number, ``status`` =
ok | duplicate | bad | no_face, ``reason``, ``box``, ``landmarks``, ``det_score``, ``row`` (the
row of the embeddings, -1 for rows that have none), ``feature_norm`` (the model's feature
norm of the face, ``Embedder.features``; null for rows without embedding; shards written by
omnifer 0.1 lack the column).

A shard whose files are missing or damaged is left out by :func:`readable_shards`, so that its
keys are embedded again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omnifer.artifacts import ShardedWriter, atomic_path, atomic_write_npy
from omnifer.errors import one_line

log = logging.getLogger(__name__)

#: the column of each face's feature norm (shards of omnifer 0.1 lack it)
NORM_COLUMN = "feature_norm"


def shard_table_columns(path: Path, columns: Sequence[str]) -> dict[str, list[Any]]:
    """``{column: values}`` of a shard table."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=list(columns))
    return {c: table.column(c).to_pylist() for c in columns}


def has_feature_norms(path: Path) -> bool:
    """Whether the shard table at ``path`` records its faces' feature norms (True when it
    cannot be read: :func:`readable_shards` names it, and it is embedded again)."""
    import pyarrow.parquet as pq

    try:
        return NORM_COLUMN in pq.read_schema(path).names
    except Exception:  # missing or damaged
        return True


def status_counts(paths: Sequence[Path], keys: set[str]) -> dict[str, int]:
    """What shards hold for the current ``keys``: distinct ``items``, ``faces`` embedded,
    ``duplicates``, ``bad`` and ``no_face`` rows (the totals of the invocations that wrote
    them)."""
    counts = {"items": 0, "faces": 0, "bad": 0, "no_face": 0, "duplicates": 0}
    names = {"ok": "faces", "duplicate": "duplicates", "bad": "bad", "no_face": "no_face"}
    for path in paths:
        cols = shard_table_columns(path, ["key", "status"])
        current = [(k, st) for k, st in zip(cols["key"], cols["status"]) if k in keys]
        counts["items"] += len({k for k, _ in current})
        for _, st in current:
            counts[names[st]] += 1
    return counts


def bad_items(paths: Sequence[Path], keys: set[str], limit: int) -> list[tuple[str, str | None]]:
    """The first ``limit`` ``bad`` rows of the current ``keys`` that shards hold: key, reason
    (the unreadable items of the invocations that wrote them)."""
    import pyarrow.parquet as pq

    out: list[tuple[str, str | None]] = []
    for path in paths:
        if len(out) >= limit:
            break
        rows = pq.read_table(path, columns=["key", "reason"], filters=[("status", "==", "bad")])
        out += [(k, r) for k, r in zip(rows.column("key").to_pylist(),
                                       rows.column("reason").to_pylist()) if k in keys]
    return out[:limit]


def readable_shards(paths: Sequence[Path]) -> list[Path]:
    """The shards of ``paths`` whose table and embeddings can be read and agree; each other one
    is named in a warning."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out = []
    for path in paths:
        try:
            table = pq.read_table(path, columns=["key", "id", "status", "row"])
            emb = np.load(path.with_suffix(".npy"), mmap_mode="r")
            ok = int(pc.sum(pc.equal(table["status"], "ok")).as_py() or 0)
            if emb.ndim != 2 or len(emb) != ok:
                raise ValueError(f"{len(emb)} embeddings for {ok} embedded rows")
        except Exception as exc:  # any damage: missing, truncated or foreign files
            log.warning("shard %s is missing or damaged (%s); its pool items are embedded "
                        "again", path, one_line(exc))
            continue
        out.append(path)
    return out


def write_shard(writer: ShardedWriter, index: int, rows: list[dict[str, Any]],
                embeddings: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Write shard ``index`` (:func:`write_shard_files`), then mark it complete in the writer's
    ``progress.json``."""
    writer.mark_done(index, rows=write_shard_files(writer.path(index), rows, embeddings))


def write_shard_files(path: Path, rows: list[dict[str, Any]],
                      embeddings: list[tuple[np.ndarray, np.ndarray]]) -> int:
    """Write the files of one shard, whose ``ok`` rows have ``embeddings`` (pairs of embeddings
    and feature norms, in order): the embeddings (``.npy``) first, then the table at ``path``;
    returns its number of rows.

    Each file is replaced atomically, so a killed writer leaves the shard as it was. Marking
    the shard complete is left to the one process that owns the run's ``progress.json``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    emb = np.concatenate([e for e, _ in embeddings]) if embeddings else \
        np.zeros((0, 0), np.float16)
    norms = np.concatenate([m for _, m in embeddings]) if embeddings else np.zeros(0, np.float32)
    row, n = [], 0
    for r in rows:
        row.append(n if r["status"] == "ok" else -1)
        n += r["status"] == "ok"
    if n != len(emb) or n != len(norms):
        raise RuntimeError(f"shard {path.name}: {n} ok rows but {len(emb)} embeddings and "
                           f"{len(norms)} feature norms")
    table = pa.table({
        "key": pa.array([r["key"] for r in rows], pa.string()),
        "id": pa.array([r.get("id") for r in rows], pa.string()),
        "face": pa.array([r.get("face", -1) for r in rows], pa.int32()),
        "status": pa.array([r["status"] for r in rows], pa.string()),
        "reason": pa.array([r.get("reason") for r in rows], pa.string()),
        "box": pa.array([r.get("box") for r in rows], pa.list_(pa.float32())),
        "landmarks": pa.array([r.get("landmarks") for r in rows], pa.list_(pa.float32())),
        "det_score": pa.array([r.get("det_score") for r in rows], pa.float32()),
        "row": pa.array(row, pa.int64()),
        NORM_COLUMN: pa.array([float(norms[i]) if i >= 0 else None for i in row],
                              pa.float32()),
    })
    # ordinary writes (np.save's tofile gives a full disk no errno)
    atomic_write_npy(path.with_suffix(".npy"), [emb], shape=emb.shape, dtype=emb.dtype)
    with atomic_path(path) as tmp:  # the table last: a table in place has its embeddings
        pq.write_table(table, tmp)
    return table.num_rows
