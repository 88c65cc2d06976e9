"""``distill``: compress a mined set into a few synthetic images per class."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from omnifer.errors import OmniferError
from omnifer.pipeline import resolve
from omnifer.pipeline.embeddings import image_cache
from omnifer.pipeline.progress import Progress, bar
from omnifer.pipeline.teacher import agreement, model_input_size, primitive_model, teacher
from omnifer.records import DistillRun

log = logging.getLogger(__name__)


def distill(workspace: Any = None, config: Any = None, *, source: Any = None,
            labeled: Any = None, model: Any = None, resume: bool = True,
            progress: Progress | None = None) -> DistillRun:
    """Distil ``source`` (default: the latest mine run's dataset; with
    ``config.with_labeled``, plus ``labeled``, default the labeled data ``source`` was mined
    with, else the latest synth run's labeled set).

    ``model`` (default: the model that mined ``source``, else the latest train run) scores and
    labels the images of ``rded`` (``sre2l`` also learns them from it), sets the default image
    size (its input size) and reports the share of distilled images it gives their label
    (``agreement``). A class with fewer
    images than requested is filled with augmented views of its images, and the run says so.
    """
    from omnifer.data import LabeledSet
    from omnifer.device import is_gpu
    from omnifer.distill import DistillConfig, train_experts
    from omnifer.distill import distill as distill_images
    from omnifer.distill.config import SIZE_WITHOUT_MODEL
    from omnifer.distill.fill import fill_short_classes
    from omnifer.distill.methods import METHODS
    from omnifer.distill.methods.rded import RDEDOptions, check_options
    from omnifer.distill.output import write_distilled

    ws = resolve.workspace(workspace)
    config = config or DistillConfig()
    data, source_path, labeled_path = source_data(ws, source, config.with_labeled, labeled,
                                                  progress=progress)
    model_path = primitive_model(ws, model, source)
    size = config.size or (model_input_size(model_path) if model_path else SIZE_WITHOUT_MODEL)
    config = config.replace(size=size).resolved(is_gpu(config.device))
    if config.method == "rded":
        check_options(RDEDOptions(**config.distill_kwargs()["options"]), size)
    if getattr(METHODS.get(config.method), "needs_teacher", False) and model_path is None:
        raise OmniferError(f"{config.method} needs a trained model to score the images; train "
                           "one first (omnifer train) or pass --model, or use --method dm")
    classes = data.expressions
    counts = np.bincount(data.table["expression"].to_numpy(np.int64), minlength=len(classes))
    present = np.flatnonzero(counts)  # a class the source lacks is left out, not invented
    if len(present) < len(classes):
        log.warning("%s has no image of %s; distilling the other classes (add --with-labeled to "
                    "cover them)", source_path,
                    ", ".join(classes[c] for c in np.flatnonzero(counts == 0)))
    largest = int(counts.argmax())
    if config.images_per_class > counts[largest]:
        raise OmniferError(
            f"--images-per-class {config.images_per_class} is more than the largest class, "
            f"{classes[largest]!r}, has ({counts[largest]} images in {source_path}); use at most "
            f"{counts[largest]}, add the labeled set (--with-labeled) or mine more faces")
    judge = None  # checked here: a model without the source's classes is a one-line error
    if model_path is not None:
        judge = teacher(model_path, [classes[c] for c in present], config.device)
    run_config = {"distill": config.to_dict(), "source": ws.portable(source_path),
                  "labeled": ws.portable(labeled_path) if labeled_path else None,
                  "model": ws.portable(model_path) if model_path else None}
    inputs = {"source": source_path, "rows": resolve.rows_input(data),
              **({"labeled": labeled_path} if labeled_path else {}),
              **({"model": model_path} if model_path else {})}
    with ws.start_run("distill", config=run_config, inputs=inputs,
                      seed=config.seed, device=config.device, resume=resume) as run:
        with bar(progress, "decoding", "img") as update:
            x, y = as_arrays(ws, data, config.size, update)
        y = np.searchsorted(present, y)  # classes of the source, renumbered
        x, y, added = fill_short_classes(x, y, config.images_per_class, seed=config.seed)
        filled = {classes[present[c]]: {"images": int(counts[present[c]]), "views_added": n}
                  for c, n in added.items()}
        hint = "" if config.with_labeled else " (--with-labeled adds its labeled faces)"
        for name, f in filled.items():
            log.warning("class %s has %d image(s), fewer than --images-per-class %d: filled "
                        "with %d augmented view(s) of them%s", name, f["images"],
                        config.images_per_class, f["views_added"], hint)
        experts = None
        if config.method == "tm":
            with bar(progress, "expert trajectories", "expert") as update:
                experts = train_experts(x, y, n_classes=len(present), seed=config.seed,
                                        width=config.width, cache_dir=ws.cache_dir / "experts",
                                        device=config.device,
                                        progress=lambda d, t, *_: update(d, t))
        unit = "class" if config.method == "rded" else "it"
        with bar(progress, f"distilling ({config.method})", unit) as update:
            result = distill_images(x, y, n_classes=len(present), **config.distill_kwargs(),
                                    checkpoint=run.path / "checkpoint.pt", experts=experts,
                                    teacher=judge, progress=lambda d, t, info: update(d, t))
        dataset, grid = write_distilled(result, run.path, classes=classes, present=present,
                                        aus=data.aus, root=ws.root)
        agree = None
        if model_path is not None:
            agree = agreement(ws, model_path, LabeledSet.load(dataset), config.device)
        run.complete(outputs={"dataset": dataset, "grid": grid},
                     counts={"source": len(data), "distilled": len(result.labels)},
                     distill_seconds=result.seconds, method=config.method,
                     iterations=result.iterations,
                     final_loss=result.history[-1] if result.history else None,
                     width=config.width, normalisation={"mean": result.mean, "std": result.std},
                     source=ws.portable(source_path),
                     labeled=ws.portable(labeled_path) if labeled_path else None,
                     model=ws.portable(model_path) if model_path else None,
                     agreement=None if agree is None else float(agree.mean()),
                     filled=filled)
    return DistillRun.from_run(run)


def source_data(ws: Any, source: Any, with_labeled: bool, labeled: Any, *,
                progress: Progress | None = None) -> tuple[Any, Any, Any]:
    """The expression-labeled rows to distil, the source's path and the labeled data's."""
    from omnifer.data import combine

    if source is None:
        source = resolve.run(ws, None, "mine")
    source_path = resolve.data_path(ws, source)
    if with_labeled and labeled is None:  # what the source was mined with, if it was
        labeled = resolve.recorded_data(ws, source_path, "mine", "labeled")
    labeled_path = (resolve.synth_output(ws, labeled, "labeled", "--labeled") if with_labeled
                    else None)
    with bar(progress, "reading data", "img") as update:
        data = resolve.read_data(ws, source_path, progress=update)
        if labeled_path is not None:
            data = combine([data, resolve.read_data(ws, labeled_path, progress=update)])
    has = data.masks()["expression"]
    if not has.any():
        raise OmniferError(f"{source_path} has no expression labels to distil; pass a mined or "
                           "labeled set with --from")
    return data.subset(has), source_path, labeled_path


def as_arrays(ws: Any, data: Any, size: int, progress: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Images float32 [N, 3, size, size] in [0, 1] and expression labels int64 [N]."""
    from omnifer.data.cache import decoded_images

    images = decoded_images(data, size, image_cache(ws), progress=progress)
    x = np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
    return x, data.table["expression"].to_numpy(np.int64)
