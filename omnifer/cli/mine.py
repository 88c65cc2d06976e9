"""``omnifer mine --threshold 0.9``: pseudo-label the pool faces whose labeled neighbours agree."""

from __future__ import annotations

from typing import Any

import click
import numpy as np

from omnifer.cli.common import (Context, bad_files_option, config_option, existing_ref,
                                make_config, pass_ctx)
from omnifer.mining.mine import MineConfig as D


@click.command("mine")
@config_option
@click.option("--threshold", type=float, default=None,
              help=f"Cosine the mined class's evidence must reach: a floor under the "
                   f"calibrated per-class thresholds [{D.threshold}; -1: no floor].")
@click.option("--target-precision", type=float, default=None,
              help=f"Per-class thresholds whose calibrated precision reaches this "
                   f"[{D.target_precision}].")
@click.option("--calibrate/--no-calibrate", default=None,
              help="--no-calibrate: --threshold alone, for every class.")
@click.option("--confidence", type=float, default=None,
              help=f"Probability that the precision bound holds [{D.confidence}].")
@click.option("--classes", default=None, metavar="NAME,...",
              callback=lambda c, p, v: tuple(x.strip() for x in v.split(",")) if v else None,
              help="Mine only these classes (the others still count as evidence).")
@click.option("--margin", type=float, default=None,
              help=f"Best class evidence minus the second class's must reach this [{D.margin}].")
@click.option("--k", type=int, default=None, help=f"Labeled neighbours per face [{D.k}].")
@click.option("--score", type=click.Choice(["vote", "mean", "max"]), default=None,
              help="Class evidence: similarity-weighted vote of the k nearest labeled faces, "
                   f"mean of the class's k nearest, or its nearest [{D.score}].")
@click.option("--prototypes", is_flag=True, default=None,
              help="Evidence = cosine to each class's mean embedding.")
@click.option("--min-votes", type=int, default=None,
              help=f"Neighbours (of k) of the mined class a face needs [{D.min_votes}].")
@click.option("--per-class-max", type=int, default=None, help="Keep at most N faces per class.")
@click.option("--balance", type=float, default=None,
              help="Cap every class at this ratio of the rarest mined class.")
@click.option("--index", "index_ref", default=None, metavar="RUN", callback=existing_ref,
              help="Index run [default: the latest one].")
@click.option("--labeled", default=None, metavar="RUN_OR_PATH", callback=existing_ref,
              help="Labeled data [default: the data the index's model was trained on, else the "
                   "latest synth run's labeled.toml].")
@click.option("--model", "model_ref", default=None, metavar="RUN_OR_PATH", callback=existing_ref,
              help="Must be the model that built the index [default: that model].")
@click.option("--exclude", multiple=True, metavar="PATH", callback=existing_ref,
              help="Evaluation data whose near duplicates are never mined; repeatable "
                   "[default: the latest synth run's test set].")
@click.option("--leak-threshold", type=float, default=None, help=f"[{D.leak_threshold}]")
@click.option("--folds", type=int, default=None,
              help=f"Cross-fitting folds of the labeled faces for calibration [{D.folds}].")
@click.option("--ood-quantile", type=float, default=None,
              help="Reject pool faces whose k-th-neighbour cosine, feature norm or weakest "
                   "activation region (occlusion) is below that of this share of labeled "
                   f"faces [{D.ood_quantile}; 0: off].")
@click.option("--duplicate-threshold", type=float, default=None,
              help="Cosine at which mined faces are near duplicates, counted once toward "
                   f"caps and balance [{D.duplicate_threshold}].")
@click.option("--max-uncertainty", type=float, default=None, metavar="U",
              help="Drop mined faces whose epistemic uncertainty (/ log C, in (0, 1]) is above "
                   "U: every member of an ensemble run, else Monte-Carlo dropout [off].")
@click.option("--mc-passes", type=int, default=None, metavar="N",
              help=f"Dropout passes scoring a single model's uncertainty [{D.mc_passes}].")
@click.option("--search", type=click.Choice(["auto", "exact", "index"]), default=None,
              help=f"auto: exact on a flat index, the index otherwise [{D.search}].")
@click.option("--seed", type=int, default=None, help=f"[{D.seed}]")
@click.option("--device", default=None, help=f"auto, cpu, cuda or cuda:N [{D.device}].")
@bad_files_option
@pass_ctx
def command(ctx: Context, config_file: str | None, index_ref: str | None, labeled: str | None,
            model_ref: str | None, exclude: tuple[str, ...], on_bad_files: str | None,
            **options: Any) -> None:
    """Mine pseudo-labeled faces from the indexed pool by similarity to labeled faces."""
    from omnifer import pipeline

    rec = pipeline.mine(ctx.workspace, make_config(D, config_file, **options), index=index_ref,
                        labeled=labeled, model=model_ref, exclude=exclude or None,
                        on_bad_files=on_bad_files, progress=ctx.progress)
    index = rec.inputs["index"]["run"]
    lines = [f"{rec.ref}: {rec.counts['mined']} faces mined from {index}",
             *[f"  {line}" for line in rec.summary],
             "  class        threshold  mined  calibration precision"]
    for r in rec.thresholds:
        t = "none" if r["threshold"] is None or not np.isfinite(r["threshold"]) \
            else f"{r['threshold']:.3f}"
        p = "-" if r["held_out_precision"] is None else f"{r['held_out_precision']:.3f}"
        lines.append(f"  {r['class']:<12} {t:>9}  {r['mined']:>5}  {p:>8}")
    lines.append(f"  wrote {rec.dataset} and {rec.report}")
    lines.append(ctx.next("distill --images-per-class 10", f"train --student --with {rec.ref}")
                 if rec.counts["mined"] else "next: nothing was mined; try a lower --threshold")
    files = {k: v for k, v in rec.run.outputs.items() if k != "dataset"}
    ctx.emit({"run": rec.ref, "dataset": rec.dataset, "counts": rec.counts,
              "thresholds": rec.thresholds, "estimate": rec.estimate, "recall": rec.recall,
              "uncertainty": rec.run.manifest.get("uncertainty"), "files": files},
             "\n".join(lines))
