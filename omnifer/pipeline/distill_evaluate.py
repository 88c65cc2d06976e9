"""``distill_evaluate``: fresh networks trained only on a distilled set (and on coresets of
the same size and the full data), tested on real faces; and the primitive model's agreement.

Every arm trains with the trainer itself (:func:`omnifer.train.train`) and the recipe the
model run recorded (backbone, input size, optimizer, learning rate, weight decay, batch size,
augmentation, dropout, schedule), on the expression task only, without validation or early
stopping, for a fixed number of optimizer steps (``steps``; ``full_steps`` for the full data),
once per seed. A distilled set's stored soft labels (``soft_<class>`` columns) become the
loss's distillation targets at the recipe's temperature. Each network lives in
``<distill run>/evaluate/<arm>/<seed>``, so a rerun skips the finished ones.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from omnifer.artifacts import atomic_write_json, fingerprint, read_json
from omnifer.errors import OmniferError
from omnifer.pipeline import resolve
from omnifer.pipeline.distill import source_data
from omnifer.pipeline.embeddings import image_cache, labeled_embeddings
from omnifer.pipeline.progress import Progress, bar
from omnifer.pipeline.teacher import agreement
from omnifer.records import DistillRun, TrainRun
from omnifer.workspace import Run

#: Folder names of the arms under ``<run>/evaluate``.
FOLDERS = {"random": "random", "herding": "herding", "k-center": "k-center",
           "full data": "full"}


def distill_evaluate(workspace: Any = None, config: Any = None, *, run: Any = None,
                     model: Any = None, test: Any = None,
                     progress: Progress | None = None) -> DistillRun:
    """Evaluate distill ``run`` (default: the latest) with networks of train run ``model``'s
    recipe (default: the model that made the set, else the latest train run) on ``test``
    (default: the latest synth run's test set, restricted to the distilled classes); results
    go to ``evaluation.json`` and the returned record's ``evaluation``."""
    from omnifer.data import LabeledSet
    from omnifer.distill import DistillEvaluateConfig, select_coreset

    ws = resolve.workspace(workspace)
    config = config or DistillEvaluateConfig()
    record: DistillRun = resolve.run(ws, run, "distill")  # type: ignore[assignment]
    made_by = ws.locate(record.model) if record.model else None
    trained = model_run(ws, made_by if model is None else model)
    distilled = LabeledSet.load(record.dataset)
    with bar(progress, "reading test data", "img") as update:
        test_ref = resolve.synth_output(ws, test, "test", "--test")
        test_set = resolve.read_data(ws, test_ref, progress=update)
    learned = np.unique(distilled.table["expression"].to_numpy(np.int64))
    has = test_set.masks()["expression"]  # the classes the distilled set has, not the others
    test_set = test_set.subset(has & np.isin(
        test_set.table["expression"].to_numpy(np.int64, na_value=-1), learned))
    if not len(test_set):
        raise OmniferError("the test data has no face of the distilled classes; pass labeled "
                           "test data with --test")
    arms: dict[str, tuple[Any, Any]] = {
        f"distilled ({record.method or record.config.method})":
            (distilled, stored_soft_labels(record.dataset, distilled.expressions))}
    agree = {next(iter(arms)): float(agreement(ws, trained.path, distilled, config.device).mean())}
    if config.baselines:
        source, _, _ = source_data(ws, ws.locate(record.source), record.config.with_labeled,
                                   ws.locate(record.labeled) if record.labeled else None)
        source = source.subset(np.isin(source.table["expression"].to_numpy(np.int64), learned))
        y = np.searchsorted(learned, source.table["expression"].to_numpy(np.int64))
        emb = labeled_embeddings(ws, source, trained.model, config.device, progress=progress,
                                 what="embedding source images")
        agrees = agreement(ws, trained.path, source, config.device)
        for name in ("random", "herding", "k-center"):
            idx = select_coreset(name, emb.astype(np.float32), y,
                                 record.config.images_per_class, seed=0)
            arms[name] = (source.subset(idx), None)
            agree[name] = float(agrees[idx].mean())
        arms["full data"] = (source, None)
        agree["full data"] = float(agrees.mean())

    plans = {name: arm_config(trained.config, len(data),
                              config.full_steps if name == "full data" else config.steps,
                              config.device) for name, (data, _) in arms.items()}
    total = config.seeds * sum(steps for _, steps in plans.values())
    results: dict[str, Any] = {}
    with bar(progress, "training", "step") as update:
        done = 0
        for name, (data, soft) in arms.items():
            recipe, steps = plans[name]
            folder = record.path / "evaluate" / FOLDERS.get(name, "distilled")
            scores = []
            for s in range(config.seeds):
                scores.append(train_and_test(
                    ws, data, soft, dataclasses.replace(recipe, seed=s), folder / str(s),
                    test_set, progress=lambda d, _t, at=done: update(at + d, total)))
                done += steps
                update(done, total)
            accs = [r["accuracy"] for r in scores]
            results[name] = {
                "accuracy": accs, "macro_f1": [r["macro_f1"] for r in scores],
                "mean": float(np.mean(accs)), "std": float(np.std(accs)),
                "seconds": float(sum(r["seconds"] for r in scores)), "steps": steps,
                "epochs": recipe.epochs, "soft_labels": soft is not None,
                "images": len(data), "model_agreement": agree[name]}
    chance = 1 / len(learned)  # no set above 1.5x chance: these networks did not learn the task
    evaluation = {"seeds": config.seeds, "steps": config.steps, "full_steps": config.full_steps,
                  "model": trained.ref, "backbone": trained.config.backbone,
                  "input_size": trained.config.input_size, "test_faces": len(test_set),
                  "classes": len(learned), "arms": list(results),  # JSON sorts results
                  "near_chance": max(r["mean"] for r in results.values()) < 1.5 * chance,
                  "results": results}
    atomic_write_json(record.path / "evaluation.json", evaluation)
    record.run.update(evaluation=evaluation)
    return DistillRun.from_run(record.run)


def model_run(ws: Any, ref: Any) -> TrainRun:
    """The train run named by ``ref`` (default: the latest); a checkpoint folder counts as the
    run that holds it, whose recorded ``TrainConfig`` is the evaluation recipe."""
    path = resolve.train_run(ws, ref)
    found = Run(path) if (path / "manifest.json").is_file() else ws.owner(path)
    if found is None:
        raise OmniferError(f"{path} is a checkpoint outside any train run, so it has no training "
                           "recipe; pass a train run (--model train/<id>)")
    return resolve.run(ws, found, "train")  # type: ignore[return-value]


def arm_config(recipe: Any, rows: int, steps: int, device: str) -> tuple[Any, int]:
    """The recipe for one arm of ``rows`` images and a budget of ``steps`` optimizer steps, and
    the steps it will take: the loop draws ``max(1, rows // batch_size)`` batches per epoch
    (no validation split), so the epochs are the budget over that, rounded up."""
    per_epoch = max(1, rows // recipe.batch_size)
    epochs = max(1, math.ceil(steps / per_epoch))
    arm = dataclasses.replace(
        recipe, tasks=("expression",), val_fraction=0.0, patience=0, ensemble=1, epochs=epochs,
        source_share=(), balance=tuple(b for b in recipe.balance if b == "expression"),
        device=device)
    return arm, epochs * per_epoch


def expression_only(data: Any) -> Any:
    """``data`` with its expression labels only (no AU columns, valence and arousal unset): the
    arms train the expression task, and the trainer refuses labels its model has no head for."""
    table = data.table.drop(columns=list(data.aus)).assign(valence=np.nan, arousal=np.nan)
    table = table.astype({"valence": np.float32, "arousal": np.float32})
    return dataclasses.replace(data, table=table, aus=())


def stored_soft_labels(dataset: Path, classes: tuple[str, ...]) -> np.ndarray | None:
    """The ``soft_<class>`` probabilities [N, C] a distilled table carries, or None."""
    import pyarrow.parquet as pq

    columns = [f"soft_{c}" for c in classes]
    if not set(columns) <= set(pq.read_schema(dataset).names):
        return None
    return pq.read_table(dataset, columns=columns).to_pandas().to_numpy(np.float64)


def at_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities stored at temperature 1 as the trainer's soft targets at ``temperature``:
    softmax(log(p) / T), zeros kept (near) zero."""
    logits = np.log(np.clip(probs, 1e-12, None)) / float(temperature)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def train_and_test(ws: Any, data: Any, soft: np.ndarray | None, recipe: Any, out: Path,
                   test_set: Any, *, progress: Any = None) -> dict[str, Any]:
    """Train one network on ``data`` with ``recipe`` in ``out`` and score it on ``test_set``
    (accuracy, macro-F1 over the test set's classes, seconds, steps taken); a finished network
    with the same inputs (recipe, rows, soft labels, test rows; not the model run, which only
    gives the recipe) is read back, a folder made with other inputs is replaced."""
    import hashlib

    import torch

    from omnifer.data.batches import BatchMaker
    from omnifer.data.cache import decoded_images
    from omnifer.device import resolve_device
    from omnifer.metrics import accuracy, f1_per_class
    from omnifer.models import load_checkpoint
    from omnifer.models.inference import predict
    from omnifer.train import train

    key = fingerprint({
        "recipe": recipe.to_dict(), "rows": resolve.rows_input(data),
        "soft": None if soft is None else hashlib.sha256(soft.tobytes()).hexdigest(),
        "test": resolve.rows_input(test_set)})
    if (out / "key.json").is_file() and read_json(out / "key.json") != {"key": key}:
        shutil.rmtree(out)  # made with other inputs: never mix
    if (out / "result.json").is_file():
        return read_json(out / "result.json")
    atomic_write_json(out / "key.json", {"key": key})
    t0 = time.perf_counter()
    targets = None
    if soft is not None:
        targets = {"expression": torch.from_numpy(at_temperature(soft, recipe.temperature))}
    result = train(expression_only(data), out, config=recipe, cache_dir=image_cache(ws),
                   soft_targets=targets, progress=progress)
    dev = resolve_device(recipe.device)
    net = load_checkpoint(result.members[0], device=dev)
    cfg = net.config
    images = decoded_images(test_set, cfg.input_size, image_cache(ws))
    maker = BatchMaker(images, mean=cfg.mean, std=cfg.std, device=dev)
    logits = predict(net, maker, np.arange(len(test_set)))["expression"]
    names = list(test_set.expressions)  # the model's classes in the test set's numbering
    known = np.array([names.index(c) if c in names else len(names) for c in cfg.expressions])
    pred, truth = known[logits.argmax(1)], test_set.table["expression"].to_numpy(np.int64)
    f1 = f1_per_class(truth, pred, len(names) + 1)[np.unique(truth)]
    scores = {"accuracy": accuracy(truth, pred), "macro_f1": float(np.mean(f1)),
              "seconds": time.perf_counter() - t0,
              "steps": sum(e["train_samples"] for e in result.history[0]) // recipe.batch_size}
    atomic_write_json(out / "result.json", scores)
    return scores
