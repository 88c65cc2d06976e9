"""``omnifer predict RUN IMAGES_OR_FOLDER...``: a trained model on new images, folders and
videos; one row per face."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import click

from omnifer.cli.common import (Context, config_option, existing_ref, make_config, num,
                                pass_ctx)
from omnifer.errors import OmniferError
from omnifer.train.predict_config import FORMATS
from omnifer.train.predict_config import PredictConfig as D

#: AUs shown per face in the table (the most probable of those decided present).
TOP_AUS = 3


def model_ref(click_ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Like ``existing_ref``, with the ``@`` part of ``RUN@k`` left to the stage."""
    if "@" in value and not os.path.exists(value):
        existing_ref(click_ctx, param, value.rpartition("@")[0])
    else:
        existing_ref(click_ctx, param, value)
    return value


@click.command("predict")
@click.argument("run_ref", metavar="RUN", callback=model_ref)
@click.argument("inputs", nargs=-1, required=True, metavar="IMAGES_OR_FOLDER...",
                type=click.Path(exists=True))
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write the table to FILE (.csv, .parquet or .json) [default: print it].")
@click.option("--format", type=click.Choice(FORMATS), default=None,
              help="table, csv, parquet or json [default: the output's suffix; a table].")
@config_option
@click.option("--detect", type=click.Choice(["retinaface"]), default=None,
              help="Detect and align faces (the faces extra); default: images are face crops.")
@click.option("--fps", type=float, default=None, help=f"Video frames sampled per second [{D.fps}].")
@click.option("--mc-dropout", type=int, default=None, metavar="N",
              help="Monte-Carlo dropout: N passes per member with dropout on the heads "
                   f"[{D.mc_dropout}: off].")
@click.option("--mc-rate", type=float, default=None,
              help="Dropout rate of those passes [default: the model's own].")
@click.option("--batch-size", type=int, default=None, help=f"Faces per model call [{D.batch_size}].")
@click.option("--device", default=None, help=f"auto, cpu, cuda or cuda:N [{D.device}].")
@click.option("--no-distance", "distance", flag_value=False, default=None,
              help="Leave out the distance to the training set (which reads that set once).")
@click.option("--on-bad-files", type=click.Choice(["error", "warn", "skip"]), default=None,
              help=f"What an unreadable image or frame does [{D.on_bad_files}].")
@pass_ctx
def command(ctx: Context, run_ref: str, inputs: tuple[str, ...], output: str | None,
            config_file: str | None, **options: Any) -> None:
    """Predict expression, valence/arousal, AUs and uncertainty of every face in image files,
    folders (recursively) and videos, with a train run (every member; RUN@k for one) or a
    checkpoint folder."""
    from omnifer import pipeline

    config = make_config(D, config_file, **options)
    if output is None and config.format == "parquet" and not ctx.as_json:
        raise OmniferError("parquet is a file format; add --output FILE.parquet, or use "
                           "--format csv or json to print")
    res = pipeline.predict(ctx.workspace, config, model=run_ref, inputs=inputs, output=output,
                           progress=ctx.progress)
    table, c = res.table, res.counts
    rate = c["images"] / res.seconds if res.seconds else 0.0
    summary = (f"{c['faces']} faces in {c['images']} images, {c['skipped']} unreadable skipped"
               + (f", {c['no_face']} without a face" if config.detect else "")
               + f"; {res.seconds:.1f}s ({rate:.0f} images/s); model {res.model} "
               f"({res.members} member(s){', MC dropout' if config.mc_dropout else ''})")
    result = {"model": res.model, "members": res.members, "counts": c, "seconds": res.seconds,
              "output": res.output}
    if output is not None:
        ctx.emit(result, f"wrote {res.output}\n{summary}")
    elif ctx.as_json:
        rows = json.loads(table.to_json(orient="records", double_precision=15))
        ctx.emit({**result, "rows": rows}, "")
    elif config.format == "csv":
        click.echo(table.to_csv(index=False), nl=False)
    elif config.format == "json":
        click.echo(table.to_json(orient="records", double_precision=15))
    else:
        click.echo("\n".join([*table_lines(table), summary]))


def table_lines(table: Any) -> list[str]:
    """One line per face: where, the expression and its probability, V/A, the AUs decided
    present (most probable first) and the uncertainty (total / epistemic)."""
    cols = set(table.columns)
    aus = [c[:-len("_prob")] for c in table.columns if c.endswith("_prob")]
    rows = table.to_dict("records")
    places = [place(r) for r in rows]
    width = min(max(map(len, places), default=0), 60)
    lines = []
    for r, where in zip(rows, places):
        parts = [where.ljust(width)]
        if "predicted" in cols:
            parts.append(f"{r['predicted']:<10} {r['confidence']:.2f}")
        if "valence" in cols:
            parts.append(f"V {r['valence']:+.2f} A {r['arousal']:+.2f}")
        if aus:
            on = sorted((a for a in aus if r[a]), key=lambda a: -r[f"{a}_prob"])[:TOP_AUS]
            parts.append("AUs " + (" ".join(f"{a} {r[f'{a}_prob']:.2f}" for a in on) or "-"))
        if "uncertainty_expression_total" in cols:
            parts.append(f"uncertainty {num(r['uncertainty_expression_total'], '.2f')} "
                         f"(epistemic {num(r['uncertainty_expression_epistemic'], '.2f')})")
        lines.append("  ".join(parts))
    return lines


def place(row: dict[str, Any]) -> str:
    """The source of a row as people read it: the file, the time in a video, the face."""
    where = str(row["source"])
    t = row.get("time")
    if t is not None and not (isinstance(t, float) and math.isnan(t)):
        where += f" @{t:.1f}s"
    if "face" in row:
        where += f" face {row['face']}"
    return where
