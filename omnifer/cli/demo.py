"""``omnifer demo [WORKSPACE]``: the whole chain on the built-in benchmark, with a report."""

from __future__ import annotations

from typing import Any

import click

from omnifer.cli.common import Context, config_option, make_config, pass_ctx
from omnifer.pipeline.demo import DemoConfig as D
from omnifer.pipeline.progress import clock
from omnifer.records import ReportRun
from omnifer.workspace import Workspace

#: the workspace when neither WORKSPACE nor -w is given
DEFAULT_WORKSPACE = "demo"


@click.command("demo")
@click.argument("workspace", required=False, type=click.Path(file_okay=False))
@config_option
@click.option("--preset", default=None,
              help=f"Synthetic benchmark preset: tiny, small, demo, scale or large [{D.preset}].")
@click.option("--fast", is_flag=True, default=None,
              help=f"A quicker look: the primitive model trains {D.fast_teacher_epochs} "
                   f"epochs, each student {D.fast_student_epochs} (instead of --teacher-epochs "
                   "and --student-epochs).")
@click.option("--teacher-epochs", type=int, default=None,
              help=f"Epochs of the primitive model [{D.teacher_epochs}].")
@click.option("--student-epochs", type=int, default=None,
              help=f"Epochs of each student [{D.student_epochs}].")
@click.option("--student-size", type=int, default=None,
              help=f"Input size of the students in pixels [{D.student_size}].")
@click.option("--threshold", type=float, default=None, help=f"Mining floor [{D.threshold}].")
@click.option("--images-per-class", type=int, default=None,
              help=f"Distilled images per class [{D.images_per_class}].")
@click.option("--seed", type=int, default=None, help=f"Random seed [{D.seed}].")
@click.option("--device", default=None, help=f"auto, cpu, cuda or cuda:N [{D.device}].")
@click.option("--resume/--fresh", default=True, show_default=True,
              help="Go on with an interrupted demo of the same options (a finished one is "
                   "shown again), or run every step again.")
@pass_ctx
def command(ctx: Context, workspace: str | None, config_file: str | None, resume: bool,
            **options: Any) -> None:
    """Run synth, train, index, mine, distill, four students, publish and report on the
    built-in benchmark [WORKSPACE: the -w workspace, else ./demo]."""
    from omnifer.pipeline.demo import demo

    config = make_config(D, config_file, **options)
    ws = Workspace(workspace or ctx.workspace_root or DEFAULT_WORKSPACE)
    rec = demo(ws, config, resume=resume, progress=ctx.progress,
               on_step=None if ctx.quiet else _step_line)
    report = ReportRun.from_run(ws.resolve(rec.report, "report"))
    summary = report.markdown.read_text(encoding="utf-8").rstrip()
    html = report.copy("html")
    total = sum(s.get("seconds") or 0 for s in rec.steps)
    ctx.emit({"run": rec.ref, "steps": rec.steps, "arms": rec.arms, "report": str(html),
              "results": report.results},
             f"{summary}\n\ndemo {rec.ref}: {len(rec.steps)} steps, {clock(total)} of work\n"
             f"report: {html}")


def _step_line(event: dict[str, Any]) -> None:
    from tqdm import tqdm

    head = f"[{event['index']:>2}/{event['total']}] {event['step']}"
    if event["status"] == "start":
        line = f"{head} ... (elapsed {clock(event['elapsed'])}, about " \
               f"{clock(event['remaining'])} left)"
    else:
        how = "done earlier" if event["status"] == "skipped" else "done"
        took = f" in {clock(event['seconds'])}" if event["seconds"] is not None else ""
        line = f"{head}: {how}{took} ({event['run']})"
    tqdm.write(line, file=click.get_text_stream("stderr"))
