"""``sre2l``, squeeze, recover and relabel (SRe2L): images recovered from a trained model -- the
primitive model -- by matching its batch-norm statistics, then labeled by it.

The images start from the real views rded picks (``init="real"``: the views the model scores
highest for each class) or from uniform noise (``init="noise"``). Each step shifts and mirrors
them at random, and Adam moves their pixels to lower the model's cross-entropy on their class
plus ``r_bn`` times the distance between the mean and variance every batch-norm layer sees and
that layer's running statistics (the first layer's term weighted ``first_bn``); the learning
rate follows a cosine from ``lr_images`` to 0 and the pixels stay in [0, 1]. The images are
recovered ``batch_size`` at a time with every class in each batch (the statistics are those of
the whole training set), and the model's probabilities on the final images are stored as soft
labels. A run resumes batch by batch from its checkpoint.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omnifer.distill.methods.base import METHODS, Distilled, Progress
from omnifer.distill.methods.rded import RDEDOptions, best_views, soft_labels
from omnifer.errors import OmniferError

if TYPE_CHECKING:
    import torch

@dataclass(frozen=True)
class SRe2LOptions:
    r_bn: float = 0.01       # weight of the batch-norm statistics term
    first_bn: float = 10.0   # that term's multiplier on each model's first batch-norm layer
    jitter: int = 4          # largest random shift in pixels per step, each axis
    batch_size: int = 128    # images recovered together, every class in each batch


@METHODS.register("sre2l")
class SRe2L:
    """Recover images from a trained model's batch-norm statistics and relabel them."""

    options = SRe2LOptions
    iterations, lr_images, learns_labels, needs_teacher = 200, 0.01, False, True

    @staticmethod
    def run(x: torch.Tensor, y: torch.Tensor, *, n_classes: int, ipc: int, opts: SRe2LOptions,
            teacher: Any, seed: int, iterations: int, lr_images: float, init: str = "real",
            checkpoint: str | os.PathLike | None = None, progress: Progress | None = None,
            mean: Any = (), std: Any = ()) -> Distilled:
        import numpy as np
        import torch

        from omnifer.artifacts import atomic_path, fingerprint
        from omnifer.distill.methods.checkpoint import data_fingerprint

        check(opts, teacher)
        t0 = time.perf_counter()
        tag = fingerprint({"options": opts, "ipc": ipc, "seed": seed, "init": init,
                           "iterations": iterations, "lr_images": lr_images,
                           "data": data_fingerprint(x, y)})
        state: dict[str, Any] = {"fingerprint": tag, "batches": {}, "losses": {}, "seconds": 0.0}
        if checkpoint is not None and os.path.exists(checkpoint):
            saved = torch.load(checkpoint, weights_only=True)
            if saved.get("fingerprint") == tag:
                state = saved
        earlier = state["seconds"]
        labels = torch.arange(n_classes).repeat_interleave(ipc)
        order = torch.arange(len(labels)).view(n_classes, ipc).T.flatten()  # classes mixed
        chunks = order.split(opts.batch_size)
        if len(state["batches"]) < len(chunks):
            start = starting_images(x, y, n_classes, ipc, init, teacher, seed)
        for b, rows in enumerate(chunks):
            if b not in state["batches"]:
                steps = torch.Generator().manual_seed(seed * 1_000_003 + b)  # resumable
                state["batches"][b], state["losses"][b] = recover(
                    start[rows], labels[rows], teacher, opts, iterations, lr_images, steps,
                    None if progress is None else
                    lambda i, b=b: progress(b * iterations + i, len(chunks) * iterations, {}))
                state["seconds"] = earlier + time.perf_counter() - t0
                if checkpoint is not None:
                    with atomic_path(checkpoint) as tmp:
                        torch.save(state, tmp)
        images = torch.empty((len(labels), *x.shape[1:]))
        for b, rows in enumerate(chunks):
            images[rows] = state["batches"][b]
        history = torch.stack([state["losses"][b] for b in range(len(chunks))]).mean(0)
        return Distilled(images=images.numpy().astype(np.float32),
                         labels=labels.numpy().astype(np.int64),
                         soft_labels=soft_labels(images, teacher, opts.batch_size), method="sre2l",
                         iterations=iterations, seconds=earlier + time.perf_counter() - t0,
                         history=tuple(history.tolist()), mean=tuple(mean), std=tuple(std))


def starting_images(x: torch.Tensor, y: torch.Tensor, n_classes: int, ipc: int, init: str,
                    teacher: Any, seed: int) -> torch.Tensor:
    """``ipc`` images per class, class by class, where the recovery starts: the views rded
    keeps (``init="real"``) or uniform noise."""
    import torch

    if init == "noise":
        return torch.rand((n_classes * ipc, *x.shape[1:]),
                          generator=torch.Generator().manual_seed(seed))
    return torch.cat([best_views(x[y == c], c, ipc, RDEDOptions(), teacher,
                                 torch.Generator().manual_seed(seed * 1_000_003 + c))
                      for c in range(n_classes)])


def check(opts: SRe2LOptions, teacher: Any) -> None:
    """One-line errors for options and teachers sre2l cannot work with (``distill`` checks
    ``init``)."""
    if opts.r_bn < 0 or opts.first_bn < 0 or opts.jitter < 0 or opts.batch_size < 1:
        raise OmniferError(f"sre2l r_bn {opts.r_bn}, first_bn {opts.first_bn} and jitter "
                           f"{opts.jitter} must be at least 0 and batch_size {opts.batch_size} "
                           "at least 1")
    if not (hasattr(teacher, "log_probs") and hasattr(teacher, "batchnorms")):
        raise OmniferError("sre2l needs the model's layers, not only its probabilities: pass "
                           "the teacher from omnifer.pipeline.teacher.teacher (--model)")
    if not any(teacher.batchnorms()):
        raise OmniferError("sre2l matches batch-norm statistics and the model has no "
                           "batch-norm layer; use --method rded")


def recover(start: torch.Tensor, labels: torch.Tensor, teacher: Any, opts: SRe2LOptions,
            iterations: int, lr: float, gen: torch.Generator, tick: Any = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``start`` ``[B, C, H, W]`` in [0, 1] after ``iterations`` recovery steps toward
    ``labels``, and the loss of each step; ``tick(i)`` after step ``i``."""
    import torch
    import torch.nn.functional as F

    weights = [(bn, opts.first_bn if k == 0 else 1.0)
               for layers in teacher.batchnorms() for k, bn in enumerate(layers)]
    seen: dict[Any, torch.Tensor] = {}
    hooks = [bn.register_forward_hook(lambda m, inp, out: seen.__setitem__(m, inp[0]))
             for bn, _ in weights]
    syn = start.to(teacher.device, copy=True).requires_grad_(True)
    target = labels.to(teacher.device)
    opt = torch.optim.Adam([syn], lr=lr, betas=(0.5, 0.9))
    losses = torch.zeros(iterations)
    try:
        for i in range(iterations):
            for group in opt.param_groups:
                group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * i / iterations))
            dx, dy = torch.randint(-opts.jitter, opts.jitter + 1, (2,), generator=gen).tolist()
            view = torch.roll(syn, shifts=(dy, dx), dims=(2, 3))
            if torch.rand(1, generator=gen).item() < 0.5:
                view = view.flip(3)
            ce = F.nll_loss(teacher.log_probs(view), target)
            stats = sum(w * (torch.linalg.vector_norm(seen[bn].mean((0, 2, 3)) - bn.running_mean)
                             + torch.linalg.vector_norm(seen[bn].var((0, 2, 3), unbiased=False)
                                                        - bn.running_var))
                        for bn, w in weights)
            loss = ce + opts.r_bn * stats
            opt.zero_grad(set_to_none=True)
            loss.backward()
            losses[i] = loss.detach().cpu()
            opt.step()
            with torch.no_grad():
                syn.clamp_(0.0, 1.0)
            if tick is not None:
                tick(i + 1)
    finally:
        for h in hooks:
            h.remove()
    return syn.detach().cpu(), losses
