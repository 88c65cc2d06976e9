"""Label noise (``omnifer synth --label-noise RATE``): a share of the labeled databases'
expression labels flipped to another class, and the hidden record of which, ``label_noise.parquet``
(next to ``pool_truth.parquet``, outside the data folders).

Each database with expression labels (``synth-expr``, the class folders: a flipped image is
written into the wrong class folder; ``synth-multi``, the rows of the ``datasets`` save that
carry an expression) gets exactly ``round(RATE * n)`` of its ``n`` labels flipped, each to one of
the other six classes drawn uniformly. The draws come from their own stream
(``SeedSequence(seed, spawn_key=(NOISE_STREAM, split))``), so every image and every other label
is byte-identical to a run without noise, and ``RATE = 0`` writes exactly what a run without the
option writes (no truth file either).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from omnifer.artifacts import content_id
from omnifer.errors import OmniferError
from omnifer.labels import EXPRESSIONS
from omnifer.synth.faces import N_CLASSES
from omnifer.synth.sampling import SPLITS
from omnifer.synth.tables import concat, schema_meta, write_parquet

#: Stream code of the label-noise draws in seed spawn keys (apart from every split's).
NOISE_STREAM = 201
#: The databases that carry expression labels, by split.
DATABASES = {"expr": "synth-expr", "multi": "synth-multi"}
#: The truth file, relative to the synth output directory.
TRUTH_FILE = "label_noise.parquet"


def check_rate(rate: float) -> float:
    """``rate`` as a float in [0, 1), or a one-line error."""
    try:
        value = float(rate)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value < 1.0:
        raise OmniferError(f"label_noise is {rate!r}; use a share in [0, 1), e.g. 0.1 "
                           "(0: no label noise)")
    return value


def noisy_labels(true: np.ndarray, rate: float, seed: int, split: str) -> np.ndarray:
    """The given labels: ``true`` with exactly ``round(rate * n)`` entries moved to one of the
    other classes (uniformly), drawn from the split's own label-noise stream."""
    true = np.asarray(true, np.int64)
    given = true.copy()
    k = int(round(check_rate(rate) * len(true)))
    if k == 0:
        return given
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(NOISE_STREAM,
                                                                        SPLITS[split])))
    flip = rng.permutation(len(true))[:k]
    given[flip] = (true[flip] + rng.integers(1, N_CLASSES, k)) % N_CLASSES
    return given


def expr_labels(n_expr: int, rate: float, seed: int) -> np.ndarray | None:
    """The given class of every ``expr`` image (the class folder it is written to); None
    without noise. The true classes of that split are balanced: sample i is class i mod 7."""
    if rate == 0:
        return None
    return noisy_labels(np.arange(n_expr) % N_CLASSES, rate, seed, "expr")


def add_multi_noise(chunks: list[dict], rate: float, seed: int) -> None:
    """Flip the expression of the ``multi`` rows that carry one, in place: ``expression``
    becomes the given label, ``true_expression`` keeps the true one."""
    if rate == 0 or not chunks:
        return
    true = concat(chunks, "expression").astype(np.int64)
    has = concat(chunks, "tasks")[:, 0]
    given = true.copy()
    given[has] = noisy_labels(true[has], rate, seed, "multi")
    start = 0
    for c in chunks:
        n = len(c["expression"])
        c["true_expression"] = c["expression"]
        c["expression"] = given[start:start + n]
        start += n


def write_label_noise(out: Path, expr: list[dict], multi: list[dict]) -> tuple[Path, dict]:
    """Write ``label_noise.parquet``: one row per flipped label (database, sample_id, image as
    the labeled readers report it, file relative to ``out``, true and given expression); return
    its path and the counts ``label_noise_<split>``."""
    import pyarrow as pa

    from omnifer.data.images import hf_ref

    root = os.path.abspath(out)
    rows: dict[str, list] = {k: [] for k in ("database", "sample_id", "image", "file", "true",
                                             "given")}
    counts = {}
    for split, chunks in (("expr", expr), ("multi", multi)):
        if not chunks or "true_expression" not in chunks[0]:
            counts[f"label_noise_{split}"] = 0
            continue
        true, given = concat(chunks, "true_expression"), concat(chunks, "expression")
        flipped = np.flatnonzero(true != given)
        counts[f"label_noise_{split}"] = len(flipped)
        if split == "expr":
            files = concat(chunks, "file")
            for i in flipped:
                rows["file"].append(files[i])
                rows["image"].append(os.path.join(root, files[i]))
                rows["sample_id"].append(content_id((out / files[i]).read_bytes()))
        else:
            data = concat(chunks, "bytes")
            for i in flipped:
                rows["file"].append(f"labeled/multi::{i}")
                rows["image"].append(hf_ref(os.path.join(root, "labeled", "multi"), int(i)))
                rows["sample_id"].append(content_id(data[i]))
        rows["database"] += [DATABASES[split]] * len(flipped)
        rows["true"] += [int(true[i]) for i in flipped]
        rows["given"] += [int(given[i]) for i in flipped]
    table = pa.table({
        "database": pa.array(rows["database"], pa.string()),
        "sample_id": pa.array(rows["sample_id"], pa.string()),
        "image": pa.array(rows["image"], pa.string()),
        "file": pa.array(rows["file"], pa.string()),
        "true_expression": pa.array(rows["true"], pa.int16()),
        "given_expression": pa.array(rows["given"], pa.int16()),
        "true_name": pa.array([EXPRESSIONS[c] for c in rows["true"]], pa.string()),
        "given_name": pa.array([EXPRESSIONS[c] for c in rows["given"]], pa.string()),
    })
    path = out / TRUTH_FILE
    write_parquet(path, table.replace_schema_metadata(schema_meta()))
    return path, counts
