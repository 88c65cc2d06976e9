"""``omnifer data check PATH``: read labeled data and report what it carries."""

from __future__ import annotations

import click

from omnifer.cli.common import Context, pass_ctx


@click.group("data")
def command() -> None:
    """Inspect labeled data (folders, CSV/Parquet manifests, saved datasets, TOML specs)."""


@command.command("check")
@click.argument("path", type=click.Path(exists=True))
@click.option("--format", "fmt", default=None,
              help="folder, csv, parquet, hf or toml [default: inferred from PATH].")
@click.option("--label-order", default=None,
              help="Order of integer expression labels, e.g. rafdb, affectnet, fer2013.")
@click.option("--on-bad-files", type=click.Choice(["error", "warn", "skip"]), default=None,
              help="What a bad row (missing/corrupt image, bad label) does "
                   "[default: a TOML spec's own setting, else error].")
@pass_ctx
def check(ctx: Context, path: str, fmt: str | None, label_order: str | None,
          on_bad_files: str) -> None:
    """Read PATH and print per-source counts of each task, and the bad rows."""
    from omnifer.data import read_labeled

    with ctx.progress("reading", unit="img") as bar:
        ds = read_labeled(path, format=fmt, label_order=label_order, on_bad_files=on_bad_files,
                          progress=bar)
    counts = ds.counts()
    lines = [f"{path}: {len(ds)} samples, {len(ds.bad)} bad rows skipped",
             f"  expressions: {', '.join(ds.expressions)}",
             f"  AUs: {', '.join(ds.aus) or 'none'}"]
    for source, per_task in counts.items():
        lines.append(f"  {source:<16} " + "  ".join(f"{k}={v}" for k, v in per_task.items()))
    for bad in ds.bad[:10]:
        lines.append(f"  bad: {bad}")
    if len(ds.bad) > 10:
        lines.append(f"  ... and {len(ds.bad) - 10} more bad rows")
    ctx.emit({"path": path, "samples": len(ds), "counts": counts,
              "expressions": ds.expressions, "aus": ds.aus,
              "bad": [str(b) for b in ds.bad]}, "\n".join(lines))
