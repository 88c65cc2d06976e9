"""``omnifer report [WORKSPACE]``: one self-contained HTML report of a workspace, plus a
Markdown summary."""

from __future__ import annotations

from typing import Any

import click

from omnifer.cli.common import Context, config_option, make_config, pass_ctx
from omnifer.report.config import ReportConfig as D
from omnifer.workspace import Workspace


@click.command("report")
@click.argument("workspace", required=False, metavar="[WORKSPACE]",
                type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default=None, metavar="FILE.html",
              help="Where to copy the report (the .md goes beside it) "
                   "[default: WORKSPACE/report.html].")
@config_option
@click.option("--faces-per-class", type=int, default=None,
              help=f"Best and borderline mined faces shown per class [{D.faces_per_class}].")
@click.option("--map-points", type=int, default=None,
              help=f"Points per group in the embedding map [{D.map_points}].")
@click.option("--seed", type=int, default=None, help=f"[{D.seed}]")
@click.option("--device", default=None,
              help=f"auto, cpu, cuda or cuda:N, for the map's embeddings [{D.device}].")
@pass_ctx
def command(ctx: Context, workspace: str | None, out: str | None, config_file: str | None,
            **options: Any) -> None:
    """Write an HTML report of the workspace's runs: lineage, results, pictures."""
    from omnifer.pipeline import report

    ws = Workspace(workspace) if workspace else ctx.workspace
    rec = report(ws, make_config(D, config_file, **options), out=out, progress=ctx.progress)
    html = rec.copy("html")
    ctx.emit({"run": rec.ref, "html": html, "markdown": rec.copy("markdown"),
              "run_html": rec.html, "results": rec.results, "counts": rec.counts},
             rec.markdown.read_text(encoding="utf-8").rstrip() + f"\nreport: {html}")
