"""``train`` and ``evaluate``: the multitask teacher, its students and their metrics."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from omnifer.errors import OmniferError
from omnifer.pipeline import resolve
from omnifer.pipeline.embeddings import image_cache
from omnifer.pipeline.progress import Progress, bar
from omnifer.records import EvaluateRun, TrainRun


def train(workspace: Any = None, config: Any = None, *, data: Any = None,
          extra: Sequence[Any] = (), teacher: Any = None, student: bool = False,
          on_bad_files: str | None = None, resume: bool = True,
          progress: Progress | None = None,
          on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainRun:
    """Train the multitask model on ``data`` (default: the latest synth run's labeled set)
    plus ``extra`` sources (mine/distill runs or paths). With ``student``, learn from the
    ``teacher`` run's soft labels too (default: the latest train run)."""
    from omnifer.data import combine
    from omnifer.data.cache import decoded_images
    from omnifer.train import TrainConfig, load_models
    from omnifer.train import train as train_loop

    ws = resolve.workspace(workspace)
    config = config or TrainConfig()
    if teacher is not None and not student:
        raise OmniferError("a teacher needs student=True (--student); add it to train a student")
    data = resolve.synth_output(ws, data, "labeled")
    inputs: dict[str, Any] = {"data": data}
    teachers, teacher_ref = [], None
    if student:
        path = resolve.train_run(ws, teacher)
        teachers = load_models(path)
        teacher_ref = ws.portable(path)
        inputs["teacher"] = path
    with bar(progress, "reading data", "img") as update:
        sets = [resolve.read_data(ws, ref, on_bad_files=on_bad_files, progress=update)
                for ref in (data, *extra)]
    labeled = combine(sets) if len(sets) > 1 else sets[0]
    inputs["rows"] = resolve.rows_input(labeled)
    with bar(progress, "decoding", "img") as update:  # cached for later runs
        decoded_images(labeled, config.input_size, image_cache(ws), progress=update)
    paths = [resolve.data_path(ws, ref) for ref in (data, *extra)]
    inputs.update({f"with_{i}": p for i, p in enumerate(paths[1:])})
    run_config = {"train": dataclasses.asdict(config), "teacher": teacher_ref,
                  "data": [ws.portable(p) for p in paths]}
    with ws.start_run("train", config=run_config, inputs=inputs, seed=config.seed,
                      device=config.device, resume=resume) as run:
        with bar(progress, "train", "step") as update:
            result = train_loop(labeled, run.path, config=config, cache_dir=image_cache(ws),
                                teachers=teachers, progress=update, on_epoch=on_epoch)
        run.complete(outputs={"model": result.members[0], "members": list(result.members)},
                     counts=result.counts, train_seconds=result.seconds,
                     validation=result.validation, balance=result.balance)
    return TrainRun.from_run(run)


def evaluate(workspace: Any = None, config: Any = None, *, model: Any = None, data: Any = None,
             progress: Progress | None = None) -> EvaluateRun:
    """Metrics of a train run (every member, as an ensemble) or a checkpoint on labeled data
    (default: the latest synth run's test set)."""
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
    run_config = {"model": ws.portable(path), "data": ws.portable(data)}
    with ws.start_run("evaluate", config=run_config, inputs={"model": path, "data": data},
                      device=str(dev), resume=False) as run:
        with bar(progress, "decoding", "img") as update:
            images = decoded_images(labeled, models[0].config.input_size, image_cache(ws),
                                    progress=update)
        result = evaluate_models(models, labeled, images, run.path, device=dev,
                                 batch_size=config.batch_size)
        run.complete(outputs=result["files"], counts={"samples": len(labeled)},
                     results={k: v for k, v in result.items() if k != "files"},
                     members=len(models))
    return EvaluateRun.from_run(run)
