"""``rded``, realistic and diverse distillation (RDED): a trained model -- the primitive
model -- picks the real views it finds most typical of each class and labels them.

Per class, every real image (or ``candidates`` of them drawn at random, at least the images
needed) gives ``views`` random resized crops (the image itself is one), the model scores each
by the log-probability of the class, and each image keeps its best view.
The ``images_per_class * factor**2`` best images' views are kept (an image gives a second view
only when the class has fewer images than that, and more views are drawn when needed;
``select="spread"`` keeps views evenly spaced over the scores instead); ``factor`` > 1
stitches ``factor x factor`` of them, shrunk, into one image. The model's probabilities on the
final images are stored as soft labels. One scoring pass per image: the cost grows linearly
with the source set (``candidates`` bounds it), and a run resumes class by class from its
checkpoint.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omnifer.distill.methods.base import METHODS, Distilled, Progress
from omnifer.errors import OmniferError

if TYPE_CHECKING:
    import numpy as np
    import torch

#: ``teacher(images)``: class probabilities ``[B, K]`` of ``[B, C, H, W]`` images in [0, 1]
Teacher = Callable[["torch.Tensor"], "np.ndarray"]


@dataclass(frozen=True)
class RDEDOptions:
    factor: int = 1          # views per side of a distilled image (1: one real view per image)
    views: int = 5           # views scored per real image, the image itself included
    scale_min: float = 0.5   # the smallest share of an image's area a view keeps
    batch_size: int = 128    # images scored at once
    select: str = "top"      # top: the best-scored images; spread: evenly over the score order
    candidates: int = 0      # real images per class drawn at random to be scored (0: all)


@METHODS.register("rded")
class RDED:
    """Select and relabel the real views a trained model scores highest for their class."""

    options = RDEDOptions
    iterations, lr_images, learns_labels, needs_teacher = 0, None, False, True

    @staticmethod
    def run(x: torch.Tensor, y: torch.Tensor, *, n_classes: int, ipc: int, opts: RDEDOptions,
            teacher: Teacher, seed: int, checkpoint: str | os.PathLike | None = None,
            progress: Progress | None = None, mean: Any = (), std: Any = ()) -> Distilled:
        import numpy as np
        import torch

        from omnifer.artifacts import atomic_path, fingerprint
        from omnifer.distill.methods.checkpoint import data_fingerprint

        check_options(opts, x.shape[-1])
        t0 = time.perf_counter()
        tag = fingerprint({"options": opts, "ipc": ipc, "seed": seed,
                           "data": data_fingerprint(x, y)})
        done: dict[int, torch.Tensor] = {}
        if checkpoint is not None and os.path.exists(checkpoint):
            state = torch.load(checkpoint, weights_only=True)
            if state.get("fingerprint") == tag:
                done = state["classes"]
        for c in range(n_classes):
            if c not in done:
                gen = torch.Generator().manual_seed(seed * 1_000_003 + c)  # resumable per class
                n = ipc * opts.factor ** 2
                xc = draw_candidates(x[y == c], opts.candidates and max(opts.candidates, n), gen)
                done[c] = stitch(best_views(xc, c, n, opts, teacher, gen), opts.factor)
                if checkpoint is not None:
                    with atomic_path(checkpoint) as tmp:
                        torch.save({"fingerprint": tag, "classes": done}, tmp)
            if progress is not None:
                progress(c + 1, n_classes, {"class": c})
        images = torch.cat([done[c] for c in range(n_classes)])
        return Distilled(images=images.numpy().astype(np.float32),
                         labels=np.repeat(np.arange(n_classes), ipc).astype(np.int64),
                         soft_labels=soft_labels(images, teacher, opts.batch_size),
                         method="rded", iterations=0,
                         seconds=time.perf_counter() - t0, history=(), mean=tuple(mean),
                         std=tuple(std))


def soft_labels(images: torch.Tensor, teacher: Teacher, batch_size: int) -> np.ndarray:
    """The teacher's probabilities of ``images``, ``batch_size`` at a time, rows summing to 1
    (float32)."""
    import numpy as np

    soft = np.concatenate([teacher(images[i:i + batch_size])
                           for i in range(0, len(images), batch_size)])
    return (soft / soft.sum(1, keepdims=True)).astype(np.float32)


#: How the kept images are chosen from each class's best views.
SELECT = ("top", "spread")


def check_select(select: str) -> None:
    """A one-line error for a ``select`` rule rded does not know."""
    if select not in SELECT:
        raise OmniferError(f"rded select {select!r} is unknown; use one of {', '.join(SELECT)}")


def draw_candidates(x: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` of the images ``x`` drawn at random (all of them when ``n`` is 0 or ``x`` has no
    more), in their order."""
    import torch

    if not n or len(x) <= n:
        return x
    return x[torch.randperm(len(x), generator=gen)[:n].sort().values]


def check_options(opts: RDEDOptions, size: int) -> None:
    """One-line errors for options that cannot work on ``size`` px images."""
    if opts.factor < 1 or size % opts.factor:
        raise OmniferError(f"rded factor {opts.factor} does not divide the {size} px images; "
                           "use a factor of at least 1 that divides --size (1 or 2)")
    if opts.candidates < 0:
        raise OmniferError(f"rded candidates is {opts.candidates}; use 0 (every image) or the "
                           "number of images per class to score")
    if opts.views < 1 or opts.batch_size < 1:
        raise OmniferError(f"rded views {opts.views} and batch_size {opts.batch_size} must be "
                           "at least 1")
    check_select(opts.select)
    if not 0.0 < opts.scale_min <= 1.0:
        raise OmniferError(f"rded scale_min is {opts.scale_min}; use a share in (0, 1]")


def best_views(x: torch.Tensor, c: int, n: int, opts: RDEDOptions, teacher: Teacher,
               gen: torch.Generator) -> torch.Tensor:
    """``n`` views of class ``c``'s images ``x``, each image's best view first; an image gives
    a second view only when ``x`` has fewer than ``n`` images. ``opts.select`` "top" keeps the
    views the teacher scores highest; "spread" keeps ``n`` views evenly spaced over the score
    order of the best views the teacher gives class ``c`` (from typical to borderline)."""
    import numpy as np
    import torch

    from omnifer.distill.views import random_views

    keep = math.ceil(n / len(x))  # views per image that can be needed
    kept, scores, agrees = [], [], []
    for i in range(0, len(x), opts.batch_size):
        v = random_views(x[i:i + opts.batch_size], max(opts.views, keep),
                         scale=(opts.scale_min, 1.0), gen=gen)
        probs = teacher(v.flatten(0, 1)).reshape(*v.shape[:2], -1)
        s = torch.from_numpy(np.log(np.maximum(probs[..., c], 1e-12)).astype(np.float64))
        top = s.topk(keep, dim=1)
        rows = torch.arange(len(v))[:, None]
        kept.append(v[rows, top.indices])
        scores.append(top.values)
        agrees.append(torch.from_numpy(probs.argmax(-1) == c)[rows, top.indices])
    views, score = torch.cat(kept), torch.cat(scores)  # [N, keep, ...], [N, keep]
    rank = torch.arange(keep).expand_as(score)  # best views of all images, then second best ...
    order = np.lexsort((-score.flatten().numpy(), rank.flatten().numpy()))
    agree = torch.cat(agrees).flatten().numpy()[order]
    if opts.select == "spread" and agree.sum() > n:
        pool = order[agree]
        order = pool[np.linspace(0, len(pool) - 1, n).round().astype(np.int64)]
    return views.flatten(0, 1)[torch.from_numpy(order[:n])]


def stitch(views: torch.Tensor, factor: int) -> torch.Tensor:
    """Consecutive groups of ``factor**2`` views shrunk and tiled into one image each."""
    import torch.nn.functional as F

    if factor == 1:
        return views.contiguous()
    n, ch, size, _ = views.shape
    side = size // factor
    small = F.interpolate(views, size=(side, side), mode="bilinear", antialias=True,
                          align_corners=False).clamp_(0.0, 1.0)
    tiles = small.view(n // factor ** 2, factor, factor, ch, side, side)
    return tiles.permute(0, 3, 1, 4, 2, 5).reshape(n // factor ** 2, ch, size, size).contiguous()
