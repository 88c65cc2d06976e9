"""The labeled databases, each with only some tasks: class folders (expression), a CSV
(valence/arousal), a Parquet table (AUs), a ``datasets`` save with partial labels (multi), and
``labeled.toml`` describing the four."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from omnifer.artifacts import atomic_write_bytes
from omnifer.labels import EXPRESSIONS
from omnifer.synth.config import SynthConfig
from omnifer.synth.faces import AUS, N_AUS, au_binary
from omnifer.synth.tables import au_columns, concat, schema_meta, toml_database, write_parquet


def write_labeled(out: Path, config: SynthConfig,
                  split_rows: Callable[[str], list[dict]]) -> dict[str, int]:
    """Write the label files of the labeled databases (the images are written per chunk);
    return the counts: expr, va, au, multi and the multi rows per task."""
    counts = {"expr": config.n_expr}  # class folders only
    counts["va"] = _write_va(out, config, split_rows("va"))
    counts["au"] = _write_au(out, config, split_rows("au"))
    counts.update(_write_multi(out, config, split_rows("multi")))
    labeled = "\n".join([
        "# omnifer synthetic benchmark: labeled databases (paths relative to this file)\n"
        'on_bad_files = "error"\n',
        toml_database("synth-expr", "labeled/expr", "folder", ["expression"]),
        toml_database("synth-va", "labeled/va/labels.csv", "csv", ["va"]),
        toml_database("synth-au", "labeled/au/labels.parquet", "parquet", ["au"]),
        toml_database("synth-multi", "labeled/multi", "hf", ["expression", "va", "au"]),
    ])
    atomic_write_bytes(out / "labeled.toml", labeled.encode())
    return counts


def _write_va(out: Path, config: SynthConfig, chunks: list[dict]) -> int:
    """CSV manifest: image, valence, arousal."""
    lines = ["image,valence,arousal"]
    if chunks:
        files = concat(chunks, "file")
        v, a = concat(chunks, "valence"), concat(chunks, "arousal")
        lines += [f"{Path(f).relative_to('labeled/va').as_posix()},{x:.4f},{y:.4f}"
                  for f, x, y in zip(files, v, a)]
    atomic_write_bytes(out / "labeled/va/labels.csv", ("\n".join(lines) + "\n").encode())
    return config.n_va


def _write_au(out: Path, config: SynthConfig, chunks: list[dict]) -> int:
    """Parquet manifest: image and the AU columns."""
    import pyarrow as pa

    au_int = concat(chunks, "au") if chunks else np.zeros((0, N_AUS))
    files = [Path(f).relative_to("labeled/au").as_posix()
             for f in (concat(chunks, "file") if chunks else [])]
    cols = {"image": pa.array(files, pa.string()),
            **au_columns(au_int.reshape(-1, N_AUS), config.au_threshold)}
    write_parquet(out / "labeled/au/labels.parquet",
                  pa.table(cols).replace_schema_metadata(schema_meta()))
    return config.n_au


def _write_multi(out: Path, config: SynthConfig, chunks: list[dict]) -> dict[str, int]:
    """A ``datasets`` save_to_disk whose rows carry one, two or all three tasks."""
    import datasets

    names = list(EXPRESSIONS)
    feats = {"image": datasets.Image(), "expression": datasets.ClassLabel(names=names),
             "valence": datasets.Value("float32"), "arousal": datasets.Value("float32")}
    for a in AUS:
        feats[a] = datasets.Value("int8")
    for a in AUS:
        feats[f"{a}_intensity"] = datasets.Value("float32")
    if chunks:
        data = concat(chunks, "bytes")
        tasks = concat(chunks, "tasks")
        expr, val = concat(chunks, "expression"), concat(chunks, "valence")
        aro = concat(chunks, "arousal")
        au = concat(chunks, "au")
    else:
        data, tasks = [], np.zeros((0, 3), bool)
        expr = val = aro = np.zeros(0)
        au = np.zeros((0, N_AUS))
    binary = au_binary(au, config.au_threshold)
    cols: dict[str, list] = {
        "image": [{"bytes": b, "path": f"multi_{i:06d}.jpg"} for i, b in enumerate(data)],
        "expression": [int(c) if t else None for c, t in zip(expr, tasks[:, 0])],
        "valence": [float(v) if t else None for v, t in zip(val, tasks[:, 1])],
        "arousal": [float(v) if t else None for v, t in zip(aro, tasks[:, 1])],
    }
    for j, a in enumerate(AUS):
        cols[a] = [int(b) if t else None for b, t in zip(binary[:, j], tasks[:, 2])]
    for j, a in enumerate(AUS):
        cols[f"{a}_intensity"] = [float(v) if t else None for v, t in zip(au[:, j], tasks[:, 2])]
    ds = datasets.Dataset.from_dict(cols, features=datasets.Features(feats))
    target = out / "labeled/multi"
    tmp = out / "labeled/.multi.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        ds.save_to_disk(str(tmp))
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return {"multi": config.n_multi, "multi_expression": int(tasks[:, 0].sum()),
            "multi_va": int(tasks[:, 1].sum()), "multi_au": int(tasks[:, 2].sum()),
            "multi_all_tasks": int(tasks.all(axis=1).sum())}
