"""``omnifer mine --threshold 0.9``: pseudo-label the pool faces whose labeled neighbours agree."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click
import numpy as np

from omnifer.cli.common import Context, embed_images, pass_ctx
from omnifer.cli.index import _model_dir
from omnifer.cli.train import default_data, read_data
from omnifer.errors import OmniferError


@click.command("mine")
@click.option("--threshold", type=float, default=None,
              help="Cosine the best class's evidence must reach [0.9; with --target-precision: "
                   "a floor under the calibrated thresholds].")
@click.option("--target-precision", type=float, default=None,
              help="Pick per-class thresholds whose held-out precision reaches this.")
@click.option("--margin", type=float, default=0.0, show_default=True,
              help="Best class evidence minus the second class's must reach this.")
@click.option("--k", type=int, default=10, show_default=True, help="Labeled neighbours per face.")
@click.option("--score", type=click.Choice(["vote", "mean", "max"]), default="vote",
              show_default=True, help="Class evidence: similarity-weighted vote of the k "
              "nearest labeled faces, mean of the class's k nearest, or its nearest.")
@click.option("--prototypes", is_flag=True, help="Evidence = cosine to each class's mean embedding.")
@click.option("--min-votes", type=int, default=1, show_default=True,
              help="Neighbours (of k) of the mined class a face needs.")
@click.option("--per-class-max", type=int, default=None, help="Keep at most N faces per class.")
@click.option("--balance", type=float, default=None,
              help="Cap every class at this ratio of the rarest mined class.")
@click.option("--index", "index_ref", default=None, metavar="RUN",
              help="Index run [default: the latest one].")
@click.option("--labeled", default=None, metavar="RUN_OR_PATH",
              help="Labeled data [default: the latest synth run's labeled.toml].")
@click.option("--model", "model_ref", default=None, metavar="RUN_OR_PATH",
              help="Must be the model that built the index [default: that model].")
@click.option("--exclude", multiple=True, metavar="PATH",
              help="Evaluation data whose near duplicates are never mined; repeatable "
                   "[default: the latest synth run's test set].")
@click.option("--leak-threshold", type=float, default=0.98, show_default=True)
@click.option("--holdout", type=float, default=0.2, show_default=True,
              help="Labeled share mined as if unlabeled to estimate precision.")
@click.option("--search", type=click.Choice(["auto", "exact", "index"]), default="auto",
              show_default=True, help="auto: exact on a flat index, the index otherwise.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--on-bad-files", type=click.Choice(["error", "warn", "skip"]), default=None)
@pass_ctx
def command(ctx: Context, threshold: float | None, target_precision: float | None,
            index_ref: str | None, labeled: str | None, model_ref: str | None,
            exclude: tuple[str, ...], on_bad_files: str | None, **options: Any) -> None:
    """Mine pseudo-labeled faces from the indexed pool by similarity to labeled faces."""
    import pandas as pd

    from omnifer.artifacts import path_fingerprint, read_json
    from omnifer.mining import MineConfig, check_classes, mine
    from omnifer.mining.output import export_images, mined_table, sample_ids
    from omnifer.mining.report import class_rows, summary_lines, write_report
    from omnifer.pools import open_pool

    if threshold is None and target_precision is None:
        threshold = 0.9
    config = MineConfig(threshold=threshold, target_precision=target_precision, **options)
    ws = ctx.workspace
    index_run = ws.resolve(index_ref, "index", hint="index a pool first: omnifer index POOL")
    sidecar = read_json(Path(index_run.outputs["index"]) / "index.json")
    model = _model_dir(ws, model_ref) if model_ref else Path(index_run.config["model"])
    fp = path_fingerprint(model / "model.safetensors")
    if fp != sidecar.get("model_fingerprint"):
        raise OmniferError(
            f"model {model} is not the one that built index/{index_run.run_id} (fingerprints "
            f"{fp[:12]} vs {str(sidecar.get('model_fingerprint'))[:12]}); mine with that model "
            "(leave out --model) or index the pool again with this one"
        )
    labeled_ref = default_data(ws, labeled, "labeled")
    with ctx.progress("reading labeled data", unit="img") as bar:
        data = read_data(ws, labeled_ref, on_bad_files=on_bad_files, progress=bar)
    data = data.subset(data.masks()["expression"])
    classes = data.expressions
    labels = data.table["expression"].to_numpy(np.int64)
    check_classes(labels, classes)
    exclude = exclude or _default_exclude(ws)
    with ctx.progress("reading evaluation data", unit="img") as bar:
        held = [read_data(ws, ref, on_bad_files=on_bad_files, progress=bar) for ref in exclude]

    pool = np.load(index_run.outputs["embeddings"], mmap_mode="r")
    ids = pd.read_parquet(index_run.outputs["ids"])
    run_config = {"mine": dataclasses.asdict(config), "index": index_run.run_id,
                  "labeled": str(labeled_ref), "exclude": list(exclude), "model": str(model)}
    inputs = {"index": index_run, "model": model, "labeled": labeled_ref,
              **{f"exclude_{i}": ref for i, ref in enumerate(exclude)}}
    with ws.start_run("mine", config=run_config, inputs=inputs, seed=config.seed,
                      device=config.device, resume=False) as run:
        labeled_emb = embed_images(ctx, ws, data, model, config.device, "embedding labeled faces")
        held_emb = [embed_images(ctx, ws, h, model, config.device, "embedding evaluation faces")
                    for h in held]
        index, approximate = _index(index_run, sidecar, config.search)
        with ctx.progress("mining", unit="face") as bar:
            result = mine(pool, labeled_emb, labels, classes=classes, config=config,
                          index=index, approximate=approximate,
                          exclude=np.concatenate(held_emb) if held_emb else None, progress=bar)
        index_config = index_run.config
        src = open_pool(index_config["pool"], index_config["source"],
                        **index_config.get("source_options", {}))
        rows = ids.iloc[result.rows].reset_index(drop=True)
        rows["sample_id"] = sample_ids(rows)
        with ctx.progress("exporting images", unit="img") as bar:
            images = export_images(src, rows, run.path / "images",
                                   detected=index_config.get("detect") is not None, progress=bar)
        mined, extra = mined_table(
            result, ids, images, classes=classes, aus=data.aus,
            labeled_ids=data.table["sample_id"].tolist(), model_fingerprint=fp,
            index_fingerprint=path_fingerprint(Path(index_run.outputs["index"]) / "index.faiss"))
        dataset = mined.save(run.path / "mined.parquet", extra=extra)
        files = write_report(result, run.path, classes=classes, config=config,
                             inputs={"index": f"index/{index_run.run_id}", "model": str(model),
                                     "labeled": str(labeled_ref)})
        per_class = class_rows(result, classes)
        run.complete(outputs={"dataset": str(dataset), **files}, counts=result.counts)
        run.update(similarity="cosine of L2-normalised embeddings", search=result.search,
                   thresholds=per_class, estimate=_estimate(result.estimate, classes),
                   recall=result.recall, calibration_curve=result.calibration.curve(50))
    lines = [f"mine/{run.run_id}: {len(mined)} faces mined from index/{index_run.run_id}",
             *[f"  {line}" for line in summary_lines(result, classes)],
             "  class        threshold  mined  held-out precision"]
    for r in per_class:
        t = f"{r['threshold']:.3f}" if np.isfinite(r["threshold"]) else "none"
        p = "-" if r["held_out_precision"] is None else f"{r['held_out_precision']:.3f}"
        lines.append(f"  {r['class']:<12} {t:>9}  {r['mined']:>5}  {p:>8}")
    lines += [f"  wrote {dataset} and {files['report']}",
              f"next: omnifer distill --images-per-class 10, or omnifer train --student "
              f"--with mine/{run.run_id}"]
    ctx.emit({"run": f"mine/{run.run_id}", "dataset": str(dataset), "counts": result.counts,
              "thresholds": per_class, "estimate": _estimate(result.estimate, classes),
              "recall": result.recall, "files": files}, "\n".join(lines))


def _default_exclude(ws: Any) -> tuple[str, ...]:
    run = ws.latest("synth")
    if run is not None and "test" in run.outputs:
        return (str(run.outputs["test"]),)
    import logging

    logging.getLogger(__name__).warning(
        "leak guard off: no evaluation set known; pass --exclude TEST_DATA so that near "
        "duplicates of test images are never mined")
    return ()


def _index(run: Any, sidecar: dict[str, Any], search: str) -> tuple[Any, bool]:
    """The pool's FAISS index when the search needs it, and whether it is approximate."""
    approximate = sidecar.get("factory", "Flat") != "Flat"
    if search == "exact" or (search == "auto" and not approximate):
        return None, approximate
    from omnifer.pools.faiss_index import read_index

    return read_index(run.outputs["index"])[0], approximate


def _estimate(est: dict[str, Any], classes: Any) -> dict[str, Any]:
    return {**est, "per_class": {classes[c]: v for c, v in est["per_class"].items()}}
