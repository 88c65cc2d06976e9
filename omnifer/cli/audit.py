"""``omnifer audit``: likely label errors, near duplicates and outliers in the labeled data."""

from __future__ import annotations

from typing import Any

import click

from omnifer.cli.common import (Context, bad_files_option, config_option, existing_ref,
                                make_config, pass_ctx)
from omnifer.mining.audit import AuditConfig as D


@click.command("audit")
@config_option
@click.option("--data", default=None, metavar="RUN_OR_PATH", callback=existing_ref,
              help="Labeled data to audit [default: the data the model was trained on, else the "
                   "latest synth run's labeled.toml].")
@click.option("--model", "model_ref", default=None, metavar="RUN_OR_PATH", callback=existing_ref,
              help="Model whose embeddings are compared (train/<id>[@k] or a checkpoint "
                   "folder) [default: the latest train run].")
@click.option("--test", multiple=True, metavar="PATH", callback=existing_ref,
              help="Evaluation data checked for train/test duplicates; repeatable "
                   "[default: the latest synth run's test set].")
@click.option("--no-test", is_flag=True, default=False, help="Skip the train/test check.")
@click.option("--k", type=int, default=None, help=f"Labeled neighbours per face [{D.k}].")
@click.option("--score", type=click.Choice(["vote", "mean", "max"]), default=None,
              help=f"Class evidence of the neighbours, as in mining [{D.score}].")
@click.option("--folds", type=int, default=None,
              help=f"Cross-fitting folds: each face is scored against the others [{D.folds}].")
@click.option("--label-score", type=click.Choice(["margin", "confidence"]), default=None,
              help="margin: the best other class's evidence minus the given class's; "
                   "confidence: 1 minus the given class's share of the evidence "
                   f"[{D.label_score}].")
@click.option("--label-cut", type=float, default=None,
              help="Flag a label when another class has more evidence and its score reaches "
                   f"this [{D.label_cut}].")
@click.option("--duplicate-threshold", type=float, default=None,
              help=f"Cosine at which two faces are near duplicates [{D.duplicate_threshold}].")
@click.option("--hash-distance", type=int, default=None,
              help=f"Perceptual-hash bits within which two faces are copies [{D.hash_distance}].")
@click.option("--outlier-quantile", type=float, default=None,
              help=f"Share of faces flagged as outliers (least like the rest) "
                   f"[{D.outlier_quantile}].")
@click.option("--suspects", type=int, default=None,
              help=f"Faces on the contact sheet [{D.suspects}].")
@click.option("--seed", type=int, default=None, help=f"[{D.seed}]")
@click.option("--device", default=None, help=f"auto, cpu, cuda or cuda:N [{D.device}].")
@bad_files_option
@pass_ctx
def command(ctx: Context, config_file: str | None, data: str | None, model_ref: str | None,
            test: tuple[str, ...], no_test: bool, on_bad_files: str | None,
            **options: Any) -> None:
    """Flag likely label errors, near duplicates (across databases and train/test) and
    outliers in the labeled data, from cross-fitted neighbours in a model's embedding space."""
    from omnifer import pipeline

    rec = pipeline.audit(ctx.workspace, make_config(D, config_file, **options), data=data,
                         model=model_ref, test=[] if no_test else (list(test) or None),
                         on_bad_files=on_bad_files, progress=ctx.progress)
    c = rec.counts
    lines = [f"{rec.ref}: {c['label_issues']} likely label errors, {c['duplicates']} "
             f"near duplicates across databases, {c['test_duplicates']} of evaluation faces, "
             f"{c['outliers']} outliers in {c['faces']} faces",
             *[f"  {line}" for line in rec.summary],
             f"  wrote {rec.table}" + (f", {rec.sheet}" if rec.sheet else "")
             + (f" and {rec.report}" if rec.report else "")]
    synth = ctx.workspace.latest("synth")
    pool = synth.outputs.get("pool") if synth is not None else None
    lines.append(ctx.next(f"index {pool or 'POOL'}"))
    ctx.emit({"run": rec.ref, "table": rec.table, "csv": rec.csv, "sheet": rec.sheet,
              "report": rec.report, "counts": c, "summary": rec.summary}, "\n".join(lines))
