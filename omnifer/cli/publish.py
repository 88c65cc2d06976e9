"""``omnifer publish RUN --repo ORG/NAME``: a synth, mine or distill run as a Hub dataset."""

from __future__ import annotations

from typing import Any

import click

from omnifer.cli.common import Context, config_option, make_config, pass_ctx
from omnifer.hub.config import PublishConfig as D


@click.command("publish")
@click.argument("run")
@click.option("--repo", default=None, metavar="ORG/NAME", help="Hub dataset repository.")
@click.option("--private", is_flag=True, default=None, help="Create the repository private.")
@click.option("--gated", type=click.Choice(["manual", "auto"]), default=None,
              help="Users request access; approved by you (manual) or at once (auto).")
@click.option("--license", "license", default=None, help=f"Hub license id [{D.license}].")
@click.option("--revision", default=None, help=f"Branch to commit to [{D.revision}].")
@click.option("--commit-message", default=None, help="Commit message.")
@click.option("--max-shard-size", default=None,
              help=f"Largest Parquet shard, e.g. 500MB [{D.max_shard_size}].")
@click.option("--with-embeddings", is_flag=True, default=None,
              help="Add an `embeddings` config (float16; mined sets).")
@click.option("--with-index", is_flag=True, default=None,
              help="Add the pool's FAISS index and its sidecar (mined sets).")
@click.option("--as-references", is_flag=True, default=None,
              help="Keys, labels and scores without pixels, for pools that may not be "
                   "redistributed.")
@click.option("--pretty-name", default=None, help="The card's title.")
@click.option("--to-dir", default=None, type=click.Path(file_okay=False),
              help="Write the folder here and upload nothing.")
@click.option("--pool", default=None, metavar="POOL",
              help="With a references folder as RUN: rebuild its images from this copy of the "
                   "pool into --to-dir.")
@click.option("--dry-run", is_flag=True,
              help="Write the folder into the publish run and upload nothing.")
@config_option
@pass_ctx
def command(ctx: Context, run: str, to_dir: str | None, dry_run: bool, pool: str | None,
            config_file: str | None, **options: Any) -> None:
    """Publish a labeled (synth), mined or distilled set to the Hugging Face Hub.

    The folder written (README.md dataset card + data/*.parquet with the images embedded) is
    exactly what is uploaded; it loads with datasets.load_dataset(DIR) and omnifer reads it
    back with --data / --with. The token comes from HF_TOKEN or `hf auth login`.
    """
    from omnifer import pipeline

    if pool is not None:
        if to_dir is None:
            raise click.UsageError("--pool rebuilds a references folder into --to-dir DIR; add it")
        done = pipeline.rebuild(run, pool=pool, to_dir=to_dir, progress=ctx.progress)
        ctx.emit(done, f"rebuilt {done['rows']} rows with images in {done['folder']} "
                       f"({done['dropped']} dropped: their pool image changed or is missing)")
        return
    config = make_config(D, config_file, **options)
    rec = pipeline.publish(ctx.workspace, config, run=run, to_dir=to_dir, dry_run=dry_run,
                           progress=ctx.progress)
    rows = ", ".join(f"{n} {split}" for split, n in rec.counts.items())
    lines = [f"{rec.ref}: {rec.source_run} as {rows} rows"
             + (" (references, no pixels)" if rec.references else ""),
             f"  folder {rec.folder} ({len(rec.files)} files)"]
    if rec.repo:
        lines.append(f"  uploaded to https://huggingface.co/datasets/{rec.repo}: "
                     f"{rec.uploaded} files, {rec.skipped} already there, commit {rec.commit}")
        lines.append(ctx.next(f"train --with hf://datasets/{rec.repo}"))
    else:
        lines += ["  nothing uploaded", ctx.next(f"train --with {rec.folder}")]
    ctx.emit({"run": rec.ref, "source_run": rec.source_run, "folder": rec.folder,
              "files": rec.files, "counts": rec.counts, "repo": rec.repo, "commit": rec.commit,
              "commit_url": rec.commit_url, "uploaded": rec.uploaded, "skipped": rec.skipped},
             "\n".join(lines))
