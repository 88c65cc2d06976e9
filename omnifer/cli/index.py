"""``omnifer index POOL``: embed a face pool with the primitive model and build a FAISS index."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from omnifer.cli.common import Context, pass_ctx
from omnifer.errors import OmniferError


@click.command("index")
@click.argument("pool", type=click.Path(exists=True))
@click.option("--source", default=None,
              help="recordio, tsv, parquet, hf, webdataset, video or folder [default: detected].")
@click.option("--model", "model_ref", default=None, metavar="RUN_OR_PATH",
              help="Train run or checkpoint folder [default: the latest train run].")
@click.option("--detect", type=click.Choice(["retinaface"]), default=None,
              help="Detect and align faces (the faces extra); default: images are aligned crops.")
@click.option("--det-threshold", type=float, default=0.5, show_default=True)
@click.option("--min-face", type=int, default=20, show_default=True,
              help="Smallest face side in pixels.")
@click.option("--fps", type=float, default=None, help="Video pools: frames sampled per second [1].")
@click.option("--column", default=None, help="Image column of tsv/parquet/hf pools.")
@click.option("--batch-size", type=int, default=None,
              help="Faces per model call [64 on CPU, where larger batches run slower; 256 on GPU].")
@click.option("--shard-size", type=int, default=8192, show_default=True,
              help="Pool items per resumable shard.")
@click.option("--workers", type=int, default=None, help="Decoding processes [CPU count - 1, max 8].")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--factory", default="auto", show_default=True,
              help="FAISS factory string, or auto (flat up to 1M vectors, approximate above).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--on-bad-files", type=click.Choice(["error", "warn", "skip"]), default="warn",
              show_default=True, help="What an unreadable image does.")
@pass_ctx
def command(ctx: Context, pool: str, source: str | None, model_ref: str | None,
            detect: str | None, det_threshold: float, min_face: int, fps: float | None,
            column: str | None, batch_size: int | None, shard_size: int, workers: int | None,
            engine: str, factory: str, device: str, on_bad_files: str) -> None:
    """Embed every face of POOL (resumable, incremental) and build a FAISS index over them."""
    from omnifer.artifacts import path_fingerprint
    from omnifer.models import read_model_config, resolve_device
    from omnifer.pools import open_pool
    from omnifer.pools.embed import EmbedConfig, embed_pool
    from omnifer.pools.index import build_pool_index, gather

    ws = ctx.workspace
    model = _model_dir(ws, model_ref)
    options = {k: v for k, v in (("fps", fps), ("column", column)) if v is not None}
    src = open_pool(pool, source, **options)
    if batch_size is None:
        batch_size = 256 if resolve_device(device).type == "cuda" else 64
    config = EmbedConfig(
        pool=str(Path(pool).resolve()), source=src.name, source_options=options,
        model=str(model), model_fingerprint=path_fingerprint(model / "model.safetensors"),
        input_size=read_model_config(model).input_size, detect=detect,
        det_threshold=det_threshold, min_face=min_face, batch_size=batch_size,
        shard_size=shard_size, device=device)
    fp_config = asdict(config)
    previous = ws.latest("index", where=lambda r: r.manifest.get("config") == _jsonable(fp_config))
    inherited = [Path(p) for p in previous.outputs.get("shards", [])] if previous else []
    # one core stays with the model: on few cores more decoders only slow it down
    workers = workers if workers is not None else min(8, (os.cpu_count() or 1) - 1)
    with ws.start_run("index", config=fp_config, inputs={"pool": pool, "model": model},
                      device=device) as run:
        with ctx.progress("embedding", unit="img") as bar:
            result = embed_pool(src, run.path, config=config, inherited=inherited,
                                workers=workers, on_bad_files=on_bad_files, engine=engine,
                                progress=bar)
        emb, ids, n = gather(result.shards, set(src.keys()), run.path)
        if n == 0:
            raise OmniferError(
                f"no face of pool {pool} could be embedded ({result.counts}); check the pool "
                "(omnifer.pools.open_pool) or drop --detect for aligned crops"
            )
        index_dir, sidecar = build_pool_index(emb, run.path, factory=factory, device=device,
                                              extra={"model_fingerprint": config.model_fingerprint,
                                                     "ids": "ids.parquet"})
        counts = {**result.counts, "indexed": n}
        run.complete(outputs={"embeddings": str(emb), "ids": str(ids), "index": str(index_dir),
                              "shards": [str(p) for p in result.shards]},
                     counts=counts, embed_seconds=result.seconds)
        run.update(bad=result.bad, inherited_from=f"index/{previous.run_id}" if previous else None)
    rate = result.counts["items"] / result.seconds if result.seconds else 0.0
    lines = [
        f"indexed {n} faces of {pool} ({src.name}) in run index/{run.run_id}",
        f"  this run: {result.counts['items']} images in {result.seconds:.1f}s ({rate:.0f} images/s), "
        f"{result.counts['faces']} faces embedded, {result.counts['bad']} unreadable skipped, "
        f"{result.counts['no_face']} without a face, {result.counts['duplicates']} exact duplicates, "
        f"{result.counts['reused']} reused from earlier runs",
        f"  index: {sidecar['factory']} ({sidecar['similarity']}), dim {sidecar['dim']}, "
        f"{index_dir}",
        "next: omnifer mine --threshold 0.9",
    ]
    ctx.emit({"run": f"index/{run.run_id}", "counts": counts, "seconds": result.seconds,
              "index": sidecar, "bad": result.bad}, "\n".join(lines))


def _model_dir(ws: Any, ref: str | None) -> Path:
    path = Path(ref) if ref and Path(ref).exists() else \
        ws.resolve(ref, "train", hint="train the primitive model first: omnifer train").path
    if (path / "model.json").is_file():
        return path.resolve()
    members = sorted(path.glob("members/*/model/model.json"),
                     key=lambda p: int(p.parent.parent.name))
    if not members:
        raise OmniferError(
            f"no model at {path}: expected model.json or a train run with members/<k>/model; "
            "pass --model with a train run or checkpoint folder"
        )
    return members[0].parent.resolve()


def _jsonable(config: dict[str, Any]) -> Any:
    from omnifer.artifacts import to_jsonable

    return to_jsonable(config)
