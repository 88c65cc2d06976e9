"""``omnifer status``: the workspace's runs and their lineage."""

from __future__ import annotations

import click

from omnifer.cli.common import Context, pass_ctx


@click.command("status")
@pass_ctx
def command(ctx: Context) -> None:
    """Show the workspace's runs, newest last, with the runs each one consumed."""
    ws = ctx.workspace
    rows = ws.lineage()
    if not rows:
        ctx.emit({"workspace": str(ws.root), "runs": []},
                 f"workspace {ws.root}: no runs yet (start with `{ctx.command('synth demo/')}`)")
        return
    lines = [f"workspace {ws.root}"]
    for row in rows:
        counts = ", ".join(f"{k}={v}" for k, v in row["counts"].items() if not isinstance(v, dict))
        secs = f" {row['seconds']:.1f}s" if row["seconds"] is not None else ""
        lines.append(f"  {row['run']:<34} {row['status']:<9}{secs}  {counts}")
        for parent in row["inputs"]:
            lines.append(f"      <- {parent}")
    ctx.emit({"workspace": str(ws.root), "runs": rows}, "\n".join(lines))
