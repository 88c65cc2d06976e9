"""``distill_evaluate``: fresh networks trained only on a distilled set (and on coresets of
the same size and the full data), tested on real faces; and the primitive model's agreement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from omnifer.artifacts import atomic_write_json
from omnifer.pipeline import resolve
from omnifer.pipeline.distill import as_arrays, source_data
from omnifer.pipeline.embeddings import image_cache, labeled_embeddings
from omnifer.pipeline.progress import Progress, bar
from omnifer.records import DistillRun


def distill_evaluate(workspace: Any = None, config: Any = None, *, run: Any = None,
                     test: Any = None, progress: Progress | None = None) -> DistillRun:
    """Evaluate distill ``run`` (default: the latest) on ``test`` (default: the latest synth
    run's test set, restricted to the distilled classes); results go to ``evaluation.json``
    and the returned record's ``evaluation``."""
    from omnifer.data import LabeledSet
    from omnifer.distill import DistillEvaluateConfig, evaluate_sets, select_coreset

    ws = resolve.workspace(workspace)
    config = config or DistillEvaluateConfig()
    record: DistillRun = resolve.run(ws, run, "distill")  # type: ignore[assignment]
    size, ipc = record.config.size, record.config.images_per_class
    distilled = LabeledSet.load(record.dataset)
    with bar(progress, "reading test data", "img") as update:
        test_set = resolve.read_data(ws, resolve.synth_output(ws, test, "test"), progress=update)
    learned = np.unique(distilled.table["expression"].to_numpy(np.int64))
    has = test_set.masks()["expression"]  # the classes the distilled set has, not the others
    test_set = test_set.subset(has & np.isin(
        test_set.table["expression"].to_numpy(np.int64, na_value=-1), learned))
    with bar(progress, "decoding", "img") as update:
        def arrays(data: Any) -> tuple[np.ndarray, np.ndarray]:  # labels renumbered to learned
            x, y = as_arrays(ws, data, size, update)
            return x, np.searchsorted(learned, y)

        sets: dict[str, Any] = {f"distilled ({record.config.method})": arrays(distilled)}
        test_xy = arrays(test_set)
        if config.baselines:
            source, _, _ = source_data(ws, ws.locate(record.source), record.config.with_labeled,
                                       ws.locate(record.labeled) if record.labeled else None)
            source = source.subset(np.isin(source.table["expression"].to_numpy(np.int64),
                                            learned))
            x, y = arrays(source)
    latest = ws.latest("train")  # the baselines need the model; agreement only uses it
    train_run = resolve.run(ws, latest, "train") if latest or config.baselines else None
    agree = {}  # the share of each set's images the primitive model gives their label
    if train_run:
        agree[next(iter(sets))] = float(agreement(ws, train_run.path, distilled,
                                                  config.device).mean())
    if config.baselines:
        emb = labeled_embeddings(ws, source, train_run.model, config.device, progress=progress,
                                 what="embedding source images")
        agrees = agreement(ws, train_run.path, source, config.device)
        for name in ("random", "herding", "k-center"):
            idx = select_coreset(name, emb.astype(np.float32), y, ipc, seed=0)
            sets[name] = (x[idx], y[idx])
            agree[name] = float(agrees[idx].mean())
        sets["full data"] = (x, y)
        agree["full data"] = float(agrees.mean())
    norm = record.normalisation or {}
    full_epochs = config.full_epochs or config.epochs
    results: dict[str, Any] = {}
    for full_arm, n_epochs in ((False, config.epochs), (True, full_epochs)):
        group = {k: v for k, v in sets.items() if (k == "full data") == full_arm}
        if group:
            with bar(progress, f"training ({n_epochs} epochs)", "net") as update:
                results.update(evaluate_sets(
                    group, test_xy, n_classes=len(learned), seeds=config.seeds, epochs=n_epochs,
                    device=config.device, width=record.width,
                    mean_std=(norm["mean"], norm["std"]),
                    progress=lambda d, t, info: update(d, t)))
    for name, share in agree.items():
        results[name]["model_agreement"] = share
    for name, (_, labels) in sets.items():
        results[name]["images"] = len(labels)
    chance = 1 / len(learned)  # no set above 1.5x chance: these networks did not learn the task
    evaluation = {"seeds": config.seeds, "epochs": config.epochs, "full_epochs": full_epochs,
                  "test_faces": len(test_set), "classes": len(learned),
                  "near_chance": max(r["mean"] for r in results.values()) < 1.5 * chance,
                  "results": results}
    atomic_write_json(record.path / "evaluation.json", evaluation)
    record.run.update(evaluation=evaluation)
    return DistillRun.from_run(record.run)


def agreement(ws: Any, model_run: Path, data: Any, device: str) -> np.ndarray:
    """Whether the primitive model classifies each image of ``data`` as its label: synthetic
    images it does not recognise teach a FER network little."""
    from omnifer.data.batches import BatchMaker
    from omnifer.data.cache import decoded_images
    from omnifer.device import resolve_device
    from omnifer.models import load_models
    from omnifer.models.inference import ensemble, predict

    dev = resolve_device(device)
    models = load_models(model_run, device=dev)
    cfg = models[0].config
    maker = BatchMaker(decoded_images(data, cfg.input_size, image_cache(ws)), mean=cfg.mean,
                       std=cfg.std, device=dev)
    rows = np.arange(len(data))
    probs = ensemble(models, [predict(m, maker, rows) for m in models])["expression_probs"]
    predicted = np.asarray(cfg.expressions)[probs.argmax(1)]
    return predicted == np.asarray(data.expressions)[data.table["expression"].to_numpy(np.int64)]
