"""``train`` and ``evaluate``: the multitask teacher, its students and their metrics."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omnifer.artifacts import atomic_write_json
from omnifer.errors import OmniferError
from omnifer.pipeline import resolve
from omnifer.pipeline.embeddings import image_cache
from omnifer.pipeline.predict import reference_embeddings
from omnifer.pipeline.progress import Progress, bar
from omnifer.records import EvaluateRun, TrainRun
from omnifer.workspace import Run


def train(workspace: Any = None, config: Any = None, *, data: Any = None,
          extra: Sequence[Any] = (), teacher: Any = None, student: bool = False,
          on_bad_files: str | None = None, resume: bool = True,
          progress: Progress | None = None,
          on_epoch: Callable[[dict[str, Any]], None] | None = None,
          on_generation: Callable[[dict[str, Any]], None] | None = None) -> TrainRun:
    """Train the multitask model on ``data`` (default: the latest synth run's labeled set)
    plus ``extra`` sources (mine/distill runs or paths). With ``student``, learn from the
    ``teacher`` run's soft labels too (default: the latest train run).

    With ``config.generations`` G > 1, generation 0 learns from ground truth (and from
    ``teacher`` only when one is named) and each later generation also from the mean soft
    labels of the previous generation's ensemble; the run's members are the last
    generation's.

    Started by ``torchrun`` (several processes), the processes train one model data-parallel
    (:mod:`omnifer.train.distributed`): the same result as one process with the same
    ``batch_size``, which is the global batch. Rank 0 records the run, shows progress and
    calls ``on_generation``; ``on_epoch`` is called on every rank."""
    from omnifer.data import combine
    from omnifer.data.cache import decoded_images
    from omnifer.device import resolve_device
    from omnifer.train import TrainConfig, load_models
    from omnifer.train.config import check_processes
    from omnifer.train.distributed import join

    ws = resolve.workspace(workspace)
    config = config or TrainConfig()
    if teacher is not None and not student and config.generations == 1:
        raise OmniferError("a teacher needs student=True (--student); add it to train a student")
    if not student and teacher is None and config.kd != ("output",) and config.generations == 1:
        raise OmniferError(f"kd={','.join(config.kd)} needs a teacher; add --student (and "
                           "--teacher RUN) or --generations 2 or more")
    if config.relabel and teacher is None and not (student and config.generations == 1):
        raise OmniferError(f"relabel={','.join(config.relabel)} needs a teacher; add --student "
                           "(with --generations, also --teacher RUN)")
    ranks = join(resolve_device(config.device))
    check_processes(config.batch_size, ranks.world)
    progress = progress if ranks.main else None
    data = resolve.synth_output(ws, data, "labeled")
    inputs: dict[str, Any] = {"data": data}
    teachers, teacher_ref = [], None
    if teacher is not None or (student and config.generations == 1):
        path = resolve.train_run(ws, teacher)
        teachers = load_models(path)
        teacher_ref = ws.portable(path)
        inputs["teacher"] = path
    with bar(progress, "reading data", "img") as update:
        sets = [resolve.read_data(ws, ref, on_bad_files=on_bad_files, progress=update)
                for ref in (data, *extra)]
    labeled = combine(sets) if len(sets) > 1 else sets[0]
    inputs["rows"] = resolve.rows_input(labeled)
    if ranks.main:
        with bar(progress, "decoding", "img") as update:  # cached for later runs
            decoded_images(labeled, config.input_size, image_cache(ws), progress=update)
    ranks.barrier()
    paths = [resolve.data_path(ws, ref) for ref in (data, *extra)]
    inputs.update({f"with_{i}": p for i, p in enumerate(paths[1:])})
    run_config = {"train": dataclasses.asdict(config), "teacher": teacher_ref,
                  "data": [ws.portable(p) for p in paths]}
    generations = functools.partial(
        _generations, labeled, config=config, cache_dir=image_cache(ws), teachers=teachers,
        progress=progress, on_epoch=on_epoch, on_generation=on_generation, ranks=ranks,
        val_sources=sets[0].sources if config.val_from == "data" else None)
    if not ranks.main:  # rank 0 opens the run and records it
        path = ranks.share(None)
        generations(Path(path))
        ranks.barrier()
        return TrainRun.from_run(Run(path))
    with ws.start_run("train", config=run_config, inputs=inputs, seed=config.seed,
                      device=config.device, resume=resume) as run:
        ranks.share(str(run.path))
        results, folders = generations(run.path)
        result = results[-1]
        best = _best_member(result.validation)
        run.complete(outputs={"model": result.members[best], "members": list(result.members),
                              "generations": folders},
                     counts={**result.counts, "processes": ranks.world},
                     train_seconds=sum(r.seconds for r in results),
                     validation=result.validation, balance=result.balance,
                     ensemble_validation=[r.ensemble_validation for r in results])
    ranks.barrier()
    return TrainRun.from_run(run)


def _generations(labeled: Any, run_path: Path, *, config: Any, cache_dir: Path,
                 teachers: Sequence[Any], progress: Progress | None,
                 on_epoch: Callable[[dict[str, Any]], None] | None,
                 on_generation: Callable[[dict[str, Any]], None] | None, ranks: Any,
                 val_sources: Sequence[str] | None) -> tuple[list[Any], list[Path]]:
    """Train every generation into ``run_path``; the results and generation folders."""
    from omnifer.train import load_models
    from omnifer.train import train as train_loop

    results, folders = [], []
    for g in range(config.generations):
        out = run_path if config.generations == 1 else run_path / "generations" / str(g)
        with bar(progress, "train" if config.generations == 1 else f"generation {g}",
                 "step") as update:
            result = train_loop(labeled, out, config=config, cache_dir=cache_dir,
                                teachers=teachers, progress=update, generation=g,
                                on_epoch=on_epoch and _tagged(on_epoch, g), ranks=ranks,
                                val_sources=val_sources)
        results.append(result)
        if config.generations > 1:
            folders.append(out)
            if ranks.main:
                _write_generation(out, g, result, on_generation)
            teachers = load_models(out)
    return results, folders


def _tagged(on_epoch: Callable[[dict[str, Any]], None], generation: int
            ) -> Callable[[dict[str, Any]], None]:
    return lambda entry: on_epoch({**entry, "generation": generation})


def _best_member(validation: Sequence[dict[str, Any]]) -> int:
    """The member with the best validation score (the first on ties or without validation)."""
    from omnifer.train.evaluate import score

    scores = [score(v) if v else float("-inf") for v in validation]
    return max(range(len(scores)), key=lambda k: (scores[k], -k))


def _write_generation(out: Any, g: int, result: Any,
                      on_generation: Callable[[dict[str, Any]], None] | None) -> None:
    """A finished generation's validation metrics, written beside its members."""
    entry = {"generation": g, "members": len(result.members), "seconds": result.seconds,
             "ensemble": result.ensemble_validation, "per_member": result.validation}
    atomic_write_json(out / "metrics.json", entry)
    if on_generation:
        on_generation(entry)


def evaluate(workspace: Any = None, config: Any = None, *, model: Any = None, data: Any = None,
             ood: Sequence[Any] = (), progress: Progress | None = None) -> EvaluateRun:
    """Metrics of a train run (every member, as an ensemble) or a checkpoint on labeled data
    (default: the latest synth run's test set). With ``ood`` (image files, folders or videos
    that show no training face), how well each out-of-distribution score tells them from
    the test images: AUROC and the false-positive rate at 95% true positives."""
    from omnifer.data.cache import decoded_images
    from omnifer.device import resolve_device
    from omnifer.train import evaluate_models, load_models
    from omnifer.train.config import EvaluateConfig

    ws = resolve.workspace(workspace)
    config = config or EvaluateConfig()
    path = resolve.train_run(ws, model)
    dev = resolve_device(config.device)
    models = load_models(path, device=dev)
    data = resolve.synth_output(ws, data, "test")
    with bar(progress, "reading data", "img") as update:
        labeled = resolve.read_data(ws, data, on_bad_files=config.on_bad_files, progress=update)
    if not len(labeled):
        raise OmniferError(f"the evaluation data {data} has no samples; pass labeled test data "
                           "with at least one image (--data)")
    run_config = {"model": ws.portable(path), "data": ws.portable(data),
                  "mc_dropout": config.mc_dropout, "mc_rate": config.mc_rate,
                  "ood": [str(p) for p in ood]}
    with ws.start_run("evaluate", config=run_config, inputs={"model": path, "data": data},
                      device=str(dev), resume=False) as run:
        with bar(progress, "decoding", "img") as update:
            images = decoded_images(labeled, models[0].config.input_size, image_cache(ws),
                                    progress=update)
        reference = reference_embeddings(ws, path, config.device, progress)
        result = evaluate_models(models, labeled, images, run.path, device=dev,
                                 batch_size=config.batch_size, mc_dropout=config.mc_dropout,
                                 mc_rate=config.mc_rate, reference=reference)
        if ood:
            result["ood"] = _ood(ws, config, path, ood, Path(result["files"]["predictions"]),
                                 progress)
            atomic_write_json(result["files"]["metrics"],
                              {k: v for k, v in result.items() if k != "files"})
        run.complete(outputs=result["files"], counts={"samples": len(labeled)},
                     results={k: v for k, v in result.items() if k != "files"},
                     members=len(models))
    return EvaluateRun.from_run(run)


def _ood(ws: Any, config: Any, model: Path, inputs: Sequence[Any], predictions: Path,
         progress: Progress | None) -> dict[str, Any]:
    """Per out-of-distribution input, the separation of each score from the test images'."""
    import pandas as pd

    from omnifer.pipeline.predict import predict
    from omnifer.train.ood import separation
    from omnifer.train.predict_config import PredictConfig

    def columns(table: Any) -> dict[str, Any]:
        return {c[4:]: table[c].to_numpy() for c in table.columns if c.startswith("ood_")}

    inside = columns(pd.read_parquet(predictions))
    pconfig = PredictConfig(batch_size=config.batch_size, device=config.device,
                            mc_dropout=config.mc_dropout, mc_rate=config.mc_rate)
    return {str(ref): separation(inside, columns(predict(ws, pconfig, model=model, inputs=[ref],
                                                         progress=progress).table))
            for ref in inputs}