"""The files of a published folder: data shards, the ``embeddings`` config, the pool index and
the dataset card, from a run's splits and records (used by :mod:`.publish`)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from omnifer import __version__
from omnifer.pipeline.progress import Progress, bar


def write_folder(folder: Path, record: Any, splits: dict[str, Any], *, config: Any,
                 index_run: Any, pool: str | None, progress: Progress | None) -> Any:
    """Write every file of the published folder; returns the card's facts."""
    from omnifer.hub.card import CardFacts, write_card
    from omnifer.hub.layout import hub_features, rows_of, write_split, yaml_features

    images = not config.as_references
    info: dict[str, dict[str, int]] = {}
    per_class: dict[str, dict[str, int]] = {}
    features = None
    for split, part in splits.items():
        extra = part.extra
        if config.as_references:
            extra = extra.assign(pool_source=index_run.source)
        features = hub_features(part.data.expressions, part.data.aus, extra, images=images)
        columns = rows_of(part.data.table, extra, features)
        refs = part.refs
        nbytes = sum(image_size(r) for r in refs) if images else 0
        with bar(progress, f"writing {split}", "row") as update:
            write_split(folder, "data", split, columns, features, shard_bytes=config.shard_bytes,
                        images=(lambda rows, refs=refs: [image_file(refs[i]) for i in rows])
                        if images else None, image_bytes=nbytes, progress=update)
        info[split] = {"num_examples": len(part.data), "num_bytes": int(sum(
            p.stat().st_size for p in (folder / "data").glob(f"{split}-*.parquet")))}
        per_class[split] = class_counts(part.data)
    facts = CardFacts(stage=record.stage, run=record.ref, version=__version__, date=today(),
                      splits=info, features=yaml_features(features), per_class=per_class,
                      lineage=[v["run"] for v in record.inputs.values()
                               if isinstance(v, dict) and v.get("run")])
    describe(facts, record, splits, pool)
    if config.as_references:
        facts.references = ("omnifer publish DOWNLOADED_FOLDER --pool /path/to/your/copy/of/"
                            f"{pool or 'the/pool'} --to-dir rebuilt/   # a {index_run.source} "
                            "pool; then: omnifer train --with rebuilt/")
    if config.with_embeddings:
        write_embeddings(folder, index_run, splits["train"].extra,
                         [str(s) for s in splits["train"].data.table["sample_id"]],
                         shard_bytes=config.shard_bytes)
        facts.embeddings = True
    if config.with_index:
        facts.index = copy_index(index_run, folder)
    write_card(folder, facts, pretty_name=config.pretty_name or pretty_name(record),
               license=config.license, gated=config.gated, repo=config.repo)
    return facts


def pretty_name(record: Any) -> str:
    kind = {"synth": "labeled", "mine": "mined", "distill": "distilled"}[record.stage]
    return f"omnifer {kind} FER set ({record.run_id})"


def class_counts(data: Any) -> dict[str, int]:
    values = data.table["expression"]
    out = {c: int((values == i).sum()) for i, c in enumerate(data.expressions)}
    missing = int(values.isna().sum())
    return {**out, "(no label)": missing} if missing else out


def describe(facts: Any, record: Any, splits: dict[str, Any], pool: str | None) -> None:
    """Fill the card facts a run's record holds: thresholds, estimate and leak guard of a mined
    set, method and agreement of a distilled one."""
    extra = splits["train"].extra
    if extra is not None and "model_fingerprint" in extra.columns and len(extra):
        facts.model_fingerprint = str(extra["model_fingerprint"].iloc[0])
    facts.sources = sorted({str(s) for split in splits.values() for s in split.data.sources})
    if record.stage == "mine":
        facts.thresholds = record.thresholds
        facts.estimate = record.estimate
        facts.leak_guard = {"near_duplicates": int(record.counts.get("leak_near_duplicates", 0)),
                            "excluded": int(record.counts.get("leak_excluded", 0))}
        facts.sources = [pool] if pool else facts.sources
    elif record.stage == "distill":
        results = (record.evaluation or {}).get("results", {})
        agreement = record.agreement if record.agreement is not None else next(
            (r.get("model_agreement") for name, r in results.items()
             if name.startswith("distilled")), None)
        facts.distillation = {"method": record.method, "iterations": record.iterations,
                              "source": record.source, "agreement": agreement}


def write_embeddings(folder: Path, index_run: Any, extra: Any, sample_ids: list[str], *,
                     shard_bytes: int) -> None:
    """The ``embeddings`` config: float16 embedding, sample id and pool row of every row."""
    from datasets import Features, List, Value

    from omnifer.hub.layout import write_split

    rows = pool_rows(index_run, extra)
    emb = np.load(index_run.embeddings, mmap_mode="r")[rows].astype(np.float16)
    features = Features({"sample_id": Value("string"), "pool_row": Value("int64"),
                         "embedding": List(Value("float16"))})
    columns = {"sample_id": sample_ids, "pool_row": rows.tolist(), "embedding": list(emb)}
    write_split(folder, "embeddings", "train", columns, features, shard_bytes=shard_bytes,
                image_bytes=emb.nbytes)


def image_file(ref: str) -> tuple[bytes, str]:
    """The bytes of an image reference and a file name for them (the extension from the
    bytes)."""
    from omnifer.data.images import read_image_bytes
    from omnifer.mining.output import MAGIC

    data = read_image_bytes(ref)
    return data, os.path.splitext(os.path.basename(ref.split("::")[0]))[0] \
        + MAGIC.get(data[:2], ".img")


def image_size(ref: str) -> int:
    return os.path.getsize(ref) if os.path.isfile(ref) else len(image_file(ref)[0])


def today() -> str:
    return dt.date.today().isoformat()


def copy_index(index_run: Any, folder: Path) -> dict[str, Any]:
    """The pool's FAISS index, its sidecar and ids table under ``folder/index``."""
    target = folder / "index"
    target.mkdir(parents=True, exist_ok=True)
    for src in (index_run.index / "index.faiss", index_run.index / "index.json", index_run.ids):
        shutil.copyfile(src, target / src.name)
    return index_run.sidecar


def pool_rows(index_run: Any, extra: Any) -> np.ndarray:
    """Each mined face's row in the pool index (the row-order invariant: index vector i is row
    i of the index run's ids table)."""
    import pandas as pd

    ids = pd.read_parquet(index_run.ids, columns=["key", "face"])
    where = {(k, int(f)): i for i, (k, f) in enumerate(zip(ids["key"], ids["face"]))}
    return np.asarray([where[(k, int(f))] for k, f in zip(extra["key"], extra["face"])],
                      dtype=np.int64)
