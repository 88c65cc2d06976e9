"""``index``: embed a face pool with the primitive model and build its FAISS index."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from omnifer.errors import OmniferError
from omnifer.pipeline import resolve
from omnifer.pipeline.progress import Progress, bar
from omnifer.records import IndexRun


def index(workspace: Any = None, config: Any = None, *, pool: Any, model: Any = None,
          progress: Progress | None = None) -> IndexRun:
    """Embed every face of ``pool`` (resumable; files embedded by an earlier run with the same
    settings are reused) with ``model`` (default: the latest train run) and index them."""
    from omnifer.artifacts import path_fingerprint, to_jsonable
    from omnifer.device import is_gpu
    from omnifer.models import read_model_config
    from omnifer.pools import open_pool
    from omnifer.pools.config import IndexConfig
    from omnifer.pools.embed import embed_pool
    from omnifer.pools.embed_config import EmbedConfig
    from omnifer.pools.index import build_pool_index, gather
    from omnifer.pools.shards import has_feature_norms

    ws = resolve.workspace(workspace)
    config = config or IndexConfig()
    model_path = resolve.model_dir(ws, model)
    options = {k: v for k, v in (("fps", config.fps), ("column", config.column)) if v is not None}
    src = open_pool(pool, config.source, **options)
    embed = EmbedConfig(
        pool=str(Path(pool).resolve()), source=src.name, source_options=options,
        model=str(model_path), model_fingerprint=path_fingerprint(model_path / "model.safetensors"),
        input_size=read_model_config(model_path).input_size, detect=config.detect,
        det_threshold=config.det_threshold, min_face=config.min_face,
        batch_size=config.resolved_batch_size(is_gpu(config.device)),
        shard_size=config.shard_size, device=config.device)
    # what decides the embeddings, with paths that survive moving the workspace
    recorded = to_jsonable({**dataclasses.asdict(embed), "pool": ws.portable(pool),
                            "model": ws.portable(model_path)})
    previous = ws.latest("index", where=lambda r: r.manifest.get("config") == recorded)
    # shards written before feature norms were recorded are embedded again
    inherited = [Path(p) for p in previous.outputs.get("shards", [])
                 if has_feature_norms(Path(p))] if previous else []
    with ws.start_run("index", config=recorded, inputs={"pool": pool, "model": model_path},
                      device=config.device) as run:
        with bar(progress, "embedding", "img") as update:
            result = embed_pool(src, run.path, config=embed, inherited=inherited,
                                workers=config.resolved_workers(os.cpu_count() or 1,
                                                                is_gpu(config.device)),
                                on_bad_files=config.on_bad_files, engine=config.engine,
                                progress=update)
        emb, ids, n = gather(result.shards, run.path, gone=result.gone)
        if n == 0:
            c = result.counts
            raise OmniferError(
                f"no face of pool {pool} could be embedded: of its {c['items'] + c['reused']} "
                f"images, {c['no_face']} had no face and {c['bad']} were unreadable in this run; "
                + ("check that the images show faces, or lower --det-threshold or --min-face"
                   if config.detect else "check the pool, or pass --detect retinaface for "
                   "photos that are not aligned face crops"))
        index_dir, sidecar = build_pool_index(
            emb, run.path, factory=config.factory, device=config.device,
            extra={"model_fingerprint": embed.model_fingerprint, "ids": "ids.parquet"})
        run.complete(outputs={"embeddings": emb, "ids": ids, "index": index_dir,
                              "shards": list(result.shards)},
                     counts={**result.counts, "indexed": n}, embed_seconds=result.seconds,
                     bad=result.bad, sidecar=sidecar,
                     inherited_from=previous.ref if previous else None)
    return IndexRun.from_run(run)
