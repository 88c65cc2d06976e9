"""Dataset distillation: learn a few synthetic images per class from real ``[N, C, H, W]`` arrays.

Methods (registry :data:`METHODS`, entry point :func:`distill`), one module each:

``dm``  distribution matching (:mod:`~omnifer.distill.methods.dm`)
``gm``  gradient matching (:mod:`~omnifer.distill.methods.gm`)
``tm``  trajectory matching from expert trajectories (:mod:`~omnifer.distill.methods.tm`)
``rded`` real views a trained model selects and labels (:mod:`~omnifer.distill.methods.rded`)
``sre2l`` images recovered from a trained model's batch-norm statistics
(:mod:`~omnifer.distill.methods.sre2l`)

dm, gm and tm learn synthetic images with Adam in pixel units and keep them in ``[0, 1]``
after each update; rded selects real views and learns nothing; sre2l learns pixels from a
trained model (its own loop).
All randomness comes from one ``torch.Generator`` seeded with ``seed``; its state is part of
the checkpoint, so a resumed run ends with the same result as an uninterrupted one. Importing
this package does not import torch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from omnifer.distill.methods.base import (METHODS, Distilled, Progress, check_soft_labels,
                                          method_options)
from omnifer.distill.methods.dm import DistributionMatching, DMOptions
from omnifer.distill.methods.gm import GMOptions, GradientMatching, gradient_distance
from omnifer.distill.methods.rded import RDED, RDEDOptions, Teacher, check_select
from omnifer.distill.methods.sre2l import SRe2L, SRe2LOptions
from omnifer.distill.methods.tm import (TMOptions, TrajectoryMatching, train_experts,
                                        trajectory_gradient)
from omnifer.distill.strategy import DEFAULT_STRATEGY, parse_strategy
from omnifer.errors import OmniferError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DMOptions", "Distilled", "DistributionMatching", "GMOptions", "GradientMatching", "METHODS",
    "Progress", "RDED", "RDEDOptions", "SRe2L", "SRe2LOptions", "TMOptions",
    "TrajectoryMatching",
    "check_select", "check_soft_labels",
    "distill", "get_method", "gradient_distance", "train_experts", "trajectory_gradient",
]

log = logging.getLogger(__name__)


def get_method(name: str) -> type:
    """The method class registered as ``name``; unknown names list the valid ones."""
    return METHODS.get(name)


def distill(images: object, labels: object, *, n_classes: int, method: str = "dm",
            images_per_class: int = 10, iterations: int | None = None,
            lr_images: float | None = None, soft_labels: bool = False, init: str = "real",
            augment: str | Iterable[str] | None = DEFAULT_STRATEGY, width: int = 128,
            depth: int | None = None, batch_real: int | None = None,
            options: dict[str, Any] | None = None, seed: int = 0, device: str = "auto",
            checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 100,
            progress: Progress | None = None,
            experts: list[torch.Tensor] | None = None,
            teacher: Teacher | None = None) -> Distilled:
    """Distil ``images`` ``[N, C, H, W]`` in [0, 1] with ``labels`` ``[N]`` into
    ``images_per_class`` synthetic images per class.

    ``iterations`` and ``lr_images`` default to the method's own (dm 1000 / 0.002, gm 200 / 0.01,
    tm 500 / 0.01, sre2l 200 / 0.01); ``options`` holds method-specific knobs (:class:`DMOptions`,
    :class:`GMOptions`, :class:`TMOptions`). ``batch_real`` sets the real images per class per
    step of the methods that have that option (dm, gm; others ignore it). ``soft_labels`` learns
    label logits with the images (gm, tm). ``init`` is ``real`` (random real images of each
    class) or ``noise``. ``augment`` is the DSA strategy (drop ``flip`` for data with a
    handedness, such as digits). The knobs of a
    :class:`~omnifer.distill.config.DistillConfig` pass as ``**config.distill_kwargs()``.

    With ``checkpoint`` (a file path), the state is saved atomically every ``checkpoint_every``
    iterations and at the end; calling again with the same path and arguments resumes from it
    (``iterations`` may grow). ``progress(done, total, info)`` is called after each iteration.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    from omnifer.artifacts import fingerprint
    from omnifer.device import resolve_device
    from omnifer.distill.methods.checkpoint import (data_fingerprint, experts_fingerprint,
                                                    load_checkpoint, save_checkpoint)
    from omnifer.distill.methods.state import Run
    from omnifer.distill.networks import channel_stats, check_data

    spec = get_method(method)
    opts = method_options(spec, options)
    if batch_real is not None and hasattr(opts, "batch_real"):
        opts = dataclasses.replace(opts, batch_real=int(batch_real))
    needs_teacher = getattr(spec, "needs_teacher", False)  # its classes need 1 image or more
    x, y = check_data(images, labels, n_classes, 1 if needs_teacher else images_per_class)
    if init not in ("real", "noise"):
        raise OmniferError(f"unknown init {init!r}; choose 'real' or 'noise'")
    check_soft_labels(method, soft_labels)
    iterations = spec.iterations if iterations is None else int(iterations)
    lr_images = spec.lr_images if lr_images is None else float(lr_images)
    if needs_teacher:
        if teacher is None:
            raise OmniferError(f"method {method!r} needs a trained model to score images; train "
                               "one first (omnifer train) or pass it (--model)")
        mean, std = channel_stats(x)
        learns = {"iterations": iterations, "lr_images": lr_images, "init": init} \
            if spec.iterations else {}  # rded selects and learns nothing
        return spec.run(x, y, n_classes=n_classes, ipc=int(images_per_class), opts=opts,
                        teacher=teacher, seed=int(seed), checkpoint=checkpoint,
                        progress=progress, mean=mean, std=std, **learns)
    strategy = parse_strategy(augment)
    dev = resolve_device(device)
    mean, std = channel_stats(x)
    ipc = int(images_per_class)

    gen = torch.Generator().manual_seed(int(seed))
    by_class = [torch.nonzero(y == c).flatten() for c in range(n_classes)]
    if init == "real":
        picks = torch.cat([i[torch.randperm(i.numel(), generator=gen)[:ipc]] for i in by_class])
        syn = x[picks].clone()
    else:
        syn = torch.rand((n_classes * ipc, *x.shape[1:]), generator=gen)
    syn = syn.to(dev).requires_grad_(True)
    label_logits = None
    if soft_labels:
        scale = math.log(9.0 * max(n_classes - 1, 1))  # softmax gives 0.9 to the own class
        label_logits = (F.one_hot(torch.arange(n_classes).repeat_interleave(ipc), n_classes)
                        .float() * scale).to(dev).requires_grad_(True)
    net_args = {"channels": x.shape[1], "size": x.shape[2], "n_classes": n_classes,
                "width": width, "depth": depth, "mean": mean, "std": std}
    run = Run([x[i].to(dev) for i in by_class], syn, label_logits, ipc=ipc, strategy=strategy,
              gen=gen, net_args=net_args, device=dev)
    impl = spec(run, opts, experts=experts, real=(x, y), seed=seed, progress=progress,
                augment=strategy)
    lrs = {"images": lr_images, "label_logits": getattr(opts, "lr_labels", lr_images)}
    if hasattr(impl, "param_groups"):
        lrs.update(impl.param_groups(run))
    run.optimizer = torch.optim.Adam(
        [{"params": [p], "lr": lrs[name]} for name, p in run.learnables.items()])

    config = {"method": method, "images_per_class": ipc, "n_classes": n_classes,
              "lr_images": lr_images, "soft_labels": soft_labels, "init": init,
              "augment": strategy, "width": width, "depth": depth,
              "options": dataclasses.asdict(opts), "seed": seed,
              "data": data_fingerprint(x, y),
              "experts": (experts_fingerprint(impl.experts)
                          if experts is not None and hasattr(impl, "experts") else None)}
    start, history, seconds = 0, [], 0.0
    if checkpoint is not None and os.path.exists(checkpoint):
        start, history, seconds = load_checkpoint(checkpoint, fingerprint(config), run, iterations)

    def diverged(what: str, done: int) -> OmniferError:
        return OmniferError(
            f"{method} distillation {what} at iteration {done} of {iterations}: the synthetic "
            f"images diverged; lower --lr-images (now {lr_images:g}) or check the source images")

    t0 = time.perf_counter()
    for it in range(start, iterations):
        loss = impl.step(run)
        done = it + 1
        if not math.isfinite(loss):
            raise diverged(f"loss is {loss}", done)
        history.append(loss)
        if checkpoint is not None and (done % checkpoint_every == 0 or done == iterations):
            if not all(bool(torch.isfinite(v).all()) for v in run.learnables.values()):
                raise diverged("made the images NaN or infinite", done)
            save_checkpoint(checkpoint, fingerprint(config), run, done, history,
                            seconds + time.perf_counter() - t0)
        if progress is not None:
            progress(done, iterations, {"loss": history[-1]})
        if done % max(1, iterations // 10) == 0:
            log.info("%s iteration %d/%d loss %.4g", method, done, iterations, history[-1])
    seconds += time.perf_counter() - t0

    soft = None
    if label_logits is not None:
        soft = label_logits.detach().softmax(1).cpu().numpy().astype(np.float32)
    return Distilled(images=syn.detach().cpu().numpy().astype(np.float32),
                     labels=run.labels.cpu().numpy().astype(np.int64), soft_labels=soft,
                     method=method, iterations=iterations, seconds=seconds,
                     history=tuple(history), mean=tuple(mean), std=tuple(std))
