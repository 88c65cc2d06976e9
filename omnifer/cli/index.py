"""``omnifer index POOL``: embed a face pool with the primitive model and build a FAISS index."""

from __future__ import annotations

from typing import Any

import click

from omnifer.cli.common import Context, config_option, existing_ref, make_config, pass_ctx
from omnifer.pools.config import IndexConfig as D


@click.command("index")
@click.argument("pool", type=click.Path(exists=True))
@config_option
@click.option("--source", default=None,
              help="recordio, tsv, parquet, hf, webdataset, video or folder [default: detected].")
@click.option("--model", "model_ref", default=None, metavar="RUN_OR_PATH", callback=existing_ref,
              help="Train run (RUN@k for one ensemble member) or checkpoint folder "
                   "[default: the latest train run].")
@click.option("--detect", type=click.Choice(["retinaface"]), default=None,
              help="Detect and align faces (the faces extra); default: images are aligned crops.")
@click.option("--det-threshold", type=float, default=None, help=f"[{D.det_threshold}]")
@click.option("--min-face", type=int, default=None,
              help=f"Smallest face side in pixels [{D.min_face}].")
@click.option("--fps", type=float, default=None, help="Video pools: frames sampled per second [1].")
@click.option("--column", default=None, help="Image column of tsv/parquet/hf pools.")
@click.option("--batch-size", type=int, default=None,
              help="Faces per model call [64 on CPU, where larger batches run slower; 256 on GPU].")
@click.option("--shard-size", type=int, default=None,
              help=f"Pool items per resumable shard [{D.shard_size}].")
@click.option("--workers", type=int, default=None, help="Reading processes [GPU: CPU count - 1; CPU: CPU count - 2; max 8].")
@click.option("--engine", type=click.Choice(["local", "ray"]), default=None, help=f"[{D.engine}]")
@click.option("--factory", default=None,
              help=f"FAISS factory string, or auto (flat up to 1M vectors, approximate above) "
                   f"[{D.factory}].")
@click.option("--device", default=None, help=f"auto, cpu, cuda or cuda:N [{D.device}].")
@click.option("--on-bad-files", type=click.Choice(["error", "warn", "skip"]), default=None,
              help=f"What an unreadable image does [{D.on_bad_files}].")
@pass_ctx
def command(ctx: Context, pool: str, model_ref: str | None, config_file: str | None,
            **options: Any) -> None:
    """Embed every face of POOL (resumable, incremental) and build a FAISS index over them."""
    from omnifer import pipeline

    rec = pipeline.index(ctx.workspace, make_config(D, config_file, **options), pool=pool,
                         model=model_ref, progress=ctx.progress)
    c, s, seconds = rec.counts, rec.sidecar, rec.embed_seconds or 0.0
    rate = c["items"] / seconds if seconds else 0.0
    lines = [
        f"indexed {c['indexed']} faces of {pool} ({rec.source}) in run {rec.ref}",
        f"  this run: {c['items']} images in {seconds:.1f}s ({rate:.0f} images/s), "
        f"{c['faces']} faces embedded, {c['bad']} unreadable skipped, "
        f"{c['no_face']} without a face, {c['duplicates']} exact duplicates, "
        f"{c['reused']} reused from earlier runs"
        + (f", {c['vanished']} keys of earlier runs gone" if c.get("vanished") else ""),
        f"  index: {s['factory']} ({s['similarity']}), dim {s['dim']}, {rec.index}",
        ctx.next("mine --threshold 0.9"),
    ]
    ctx.emit({"run": rec.ref, "counts": c, "seconds": seconds, "index": s, "bad": rec.bad},
             "\n".join(lines))
