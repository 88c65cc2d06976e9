"""The Hub layout: a sample table as Parquet shards ``<config dir>/{split}-{i:05d}-of-{n:05d}.parquet``
with the images embedded and ``datasets`` features declared, so that
``datasets.load_dataset(folder)`` and the Hub's viewer read it as it is.

Columns, in order: ``image`` (``Image``; left out for references), ``sample_id``, ``source``,
``expression`` (``ClassLabel`` with the canonical names; -1 = no label), ``valence``,
``arousal``, one float per AU, ``weight``, then the set's own columns (a mined set's score,
margin, votes and neighbour ids; a distilled set's ``soft_<class>``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omnifer.errors import OmniferError

#: Bytes a row takes besides its image, for sizing shards.
ROW_OVERHEAD = 256


def shard_name(split: str, i: int, n: int) -> str:
    return f"{split}-{i:05d}-of-{n:05d}.parquet"


def hub_features(expressions: Sequence[str], aus: Sequence[str], extra: pd.DataFrame | None,
                 *, images: bool = True) -> Any:
    """The ``datasets.Features`` of a published sample table with ``extra`` columns."""
    from datasets import ClassLabel, Features, Image, Value

    spec: dict[str, Any] = {"image": Image()} if images else {}
    spec.update({"sample_id": Value("string"), "source": Value("string"),
                 "expression": ClassLabel(names=list(expressions)),
                 "valence": Value("float32"), "arousal": Value("float32")})
    spec.update({a: Value("float32") for a in aus})
    spec["weight"] = Value("float32")
    for name in ([] if extra is None else extra.columns):
        spec[name] = column_feature(extra[name])
    return Features(spec)


def column_feature(values: pd.Series) -> Any:
    """The feature of an extra column: floats as float32, integers, strings, lists of either."""
    from datasets import List, Value

    kind = values.dtype.kind
    if kind == "f":
        return Value("float32")
    if kind in "iu":
        return Value("int64" if values.dtype.itemsize > 4 else "int32")
    if kind == "b":
        return Value("bool")
    first = next((v for v in values if v is not None and not isinstance(v, float)), "")
    if isinstance(first, (list, tuple, np.ndarray)):
        inner = next((x for v in values if v is not None for x in v), "")
        return List(Value("float32" if isinstance(inner, (float, np.floating)) else "string"))
    return Value("string")


def yaml_features(features: Any) -> list[dict[str, Any]]:
    """``features`` as the ``dataset_info.features`` list of a dataset card."""
    from datasets import ClassLabel, Image, List, Value

    def dtype(f: Any) -> Any:
        if isinstance(f, Image):
            return "image"
        if isinstance(f, ClassLabel):
            return {"class_label": {"names": {str(i): n for i, n in enumerate(f.names)}}}
        if isinstance(f, Value):
            return f.dtype
        raise OmniferError(f"no card form for feature {f!r}")

    out = []
    for name, f in features.items():
        if isinstance(f, List):
            out.append({"name": name, "list": dtype(f.feature)})
        else:
            out.append({"name": name, "dtype": dtype(f)})
    return out


def rows_of(table: pd.DataFrame, extra: pd.DataFrame | None, features: Any) -> dict[str, list]:
    """The columns of the published table (without images), as the features want them."""
    cols: dict[str, list] = {}
    for name, feat in features.items():
        if name == "image":
            continue
        if name == "expression":
            cols[name] = table["expression"].fillna(-1).astype(np.int64).tolist()
            continue
        src = table if name in table.columns else extra
        values = src[name]
        if getattr(feat, "dtype", None) == "float32":
            cols[name] = values.astype(np.float32).tolist()
        elif getattr(feat, "dtype", None) == "string":
            cols[name] = [None if v is None else str(v) for v in values]
        elif hasattr(feat, "feature"):  # a list column
            cols[name] = [None if v is None else list(v) for v in values]
        else:
            cols[name] = values.tolist()
    return cols


def write_split(folder: Path, config_dir: str, split: str, columns: dict[str, list],
                features: Any, *, shard_bytes: int,
                images: Callable[[list[int]], list[tuple[bytes, str]]] | None = None,
                image_bytes: int = 0,
                progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Shards of one split: rows cut evenly so that a shard holds about ``shard_bytes``
    (``image_bytes``: the split's images in total). ``images(rows)`` gives ``(bytes, file
    name)`` per row; it is called one shard at a time, so only one shard is in memory."""
    import pyarrow.parquet as pq
    from datasets import Dataset

    n = len(next(iter(columns.values()))) if columns else 0
    if n == 0:
        raise OmniferError(f"the {split} split has no rows; nothing to publish")
    total = image_bytes + ROW_OVERHEAD * n
    shards = max(1, min(n, math.ceil(total / shard_bytes)))
    out_dir = folder / config_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, n, shards + 1).round().astype(int)
    paths = []
    for i in range(shards):
        rows = list(range(bounds[i], bounds[i + 1]))
        part = {k: [v[r] for r in rows] for k, v in columns.items()}
        if images is not None:
            part = {"image": [{"bytes": b, "path": p} for b, p in images(rows)], **part}
        path = out_dir / shard_name(split, i, shards)
        pq.write_table(Dataset.from_dict(part, features=features).data.table, str(path))
        paths.append(path)
        if progress:
            progress(int(bounds[i + 1]), n)
    return paths
