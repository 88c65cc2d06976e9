"""The pool index: every embedded face of the current pool in one array, its ids, and FAISS.

Writes into a run directory:

- ``embeddings.npy``: float16 [N, D], L2-normalised embeddings of the pool's faces (one per
  distinct image without detection; exact duplicates appear once);
- ``ids.parquet``: row ``i`` of the embeddings: ``id``, ``key``, ``face``, ``box``,
  ``landmarks``, ``det_score``, ``feature_norm`` (null for faces of shards written before the
  column existed);
- ``index/index.faiss`` + ``index/index.json``: a FAISS inner-product index over the rows
  (cosine similarity, since the embeddings are unit vectors).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omnifer.artifacts import atomic_path, atomic_write_npy
from omnifer.errors import OmniferError, one_line
from omnifer.pools.shards import NORM_COLUMN

ID_COLUMNS = ("id", "key", "face", "box", "landmarks", "det_score")


def gather(shards: Sequence[Path], out_dir: str | Path, *,
           gone: Collection[str] = ()) -> tuple[Path, Path, int]:
    """Concatenate the ``ok`` rows of ``shards`` (less those whose key is in ``gone``: keys the
    pool no longer lists, ``EmbedResult.gone``) into ``embeddings.npy`` and ``ids.parquet``,
    one shard at a time; returns paths and count."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    tables, n, dim = [], 0, None
    for path in shards:
        t = pq.read_table(path)
        ok = pc.equal(t["status"], "ok")
        if gone:
            ok = pc.and_(ok, pa.array([k not in gone for k in t["key"].to_pylist()]))
        t = t.filter(ok)
        tables.append((path, t))
        n += t.num_rows
        if dim is None:
            shape = np.load(path.with_suffix(".npy"), mmap_mode="r").shape
            dim = shape[1] if len(shape) == 2 and shape[1] else None
    emb_path, ids_path = out_dir / "embeddings.npy", out_dir / "ids.parquet"
    parts = (np.load(path.with_suffix(".npy"), mmap_mode="r")[
        np.asarray(t["row"].to_numpy(), np.int64)] for path, t in tables if t.num_rows)
    atomic_write_npy(emb_path, parts, shape=(n, dim or 0), dtype=np.float16)
    ids = pa.concat_tables([_id_columns(t) for _, t in tables]) if tables else \
        pa.table({**{c: pa.array([], pa.string()) for c in ID_COLUMNS},
                  NORM_COLUMN: pa.array([], pa.float32())})
    with atomic_path(ids_path) as tmp:
        pq.write_table(ids, tmp)
    return emb_path, ids_path, n


def _id_columns(table: Any) -> Any:
    """``table``'s id columns and its feature norms (nulls for a shard without them)."""
    import pyarrow as pa

    out = table.select(list(ID_COLUMNS))
    norms = table[NORM_COLUMN] if NORM_COLUMN in table.column_names else \
        pa.nulls(table.num_rows, pa.float32())
    return out.append_column(NORM_COLUMN, norms)


def feature_norms(ids: Any) -> np.ndarray | None:
    """float32 [n] feature norms of an index run's faces, from its ids table (None when the
    table has none: index runs of omnifer 0.1)."""
    if NORM_COLUMN not in ids.columns or ids[NORM_COLUMN].isna().any():
        return None
    return ids[NORM_COLUMN].to_numpy(np.float32)


def load_index_outputs(embeddings: Path, ids: Path) -> tuple[np.ndarray, Any]:
    """The embeddings (read-only memory map) and the ids table (pandas) of an index run; a
    missing, truncated or damaged file, or the two disagreeing, is a one-line error."""
    import pandas as pd

    fix = "index the pool again with omnifer index (it reuses the embedded shards)"
    try:
        vectors = np.load(embeddings, mmap_mode="r")
        if vectors.ndim != 2:
            raise ValueError(f"shape {vectors.shape} is not [faces, dim]")
    except Exception as exc:  # any damage: missing, truncated or not an array
        raise OmniferError(f"pool embeddings {embeddings} cannot be read ({one_line(exc)}); "
                           f"{fix}") from None
    try:
        table = pd.read_parquet(ids)
        missing = [c for c in ID_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"columns {missing} are missing")
    except Exception as exc:  # any damage: missing, truncated or not Parquet
        raise OmniferError(f"pool ids {ids} cannot be read ({one_line(exc)}); {fix}") from None
    if len(table) != len(vectors):
        raise OmniferError(f"pool ids {ids} has {len(table)} rows for {len(vectors)} embeddings "
                           f"in {embeddings}; {fix}")
    return vectors, table


def build_pool_index(embeddings: Path, out_dir: str | Path, *, factory: str = "auto",
                     device: str = "auto", extra: dict[str, Any] | None = None
                     ) -> tuple[Path, dict[str, Any]]:
    """A FAISS index over ``embeddings.npy`` written to ``out_dir/index``; returns dir, sidecar."""
    from omnifer.artifacts import read_json
    from omnifer.pools.faiss_index import SIDECAR_FILE, build_index, choose_factory, write_index

    vectors = np.load(embeddings, mmap_mode="r")
    n, dim = vectors.shape
    factory = choose_factory(n, dim) if factory == "auto" else factory
    index = build_index(vectors, factory=factory, device=device)
    directory = Path(out_dir) / "index"
    write_index(index, directory, factory=factory, count=n, dim=dim, extra=extra)
    return directory, read_json(directory / SIDECAR_FILE)
