"""``DistillConfig``: the knobs of ``omnifer distill``, their defaults (written only here) and
their validation.

It validates without torch; the device-dependent defaults of a distillation (network width,
real batch, dm iterations) are filled by :meth:`DistillConfig.resolved` once the device is known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from omnifer.config import StageConfig
from omnifer.device import parse_device
from omnifer.distill.methods import METHODS, RDEDOptions, check_select, check_soft_labels
from omnifer.errors import OmniferError

#: Smallest image side the distillation ConvNets take: their first block halves the image.
MIN_SIZE = 2
#: Image side when no trained model gives one.
SIZE_WITHOUT_MODEL = 32


def _check_int(name: str, value: Any, minimum: int, *, unit: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OmniferError(f"{name} is {value!r}; use an integer of at least {minimum}{unit}")


@dataclass(frozen=True)
class DistillConfig(StageConfig):
    """How ``omnifer distill`` compresses a set into a few synthetic images per class.

    ``None`` knobs take the method's or the device's default (see :meth:`resolved`).
    """

    section: ClassVar[str] = "distill"

    images_per_class: int = 10
    method: str = "rded"  #: a name of :data:`~omnifer.distill.methods.METHODS`
    #: image side in pixels; None: the primitive model's input size (:data:`SIZE_WITHOUT_MODEL`
    #: without a model)
    size: int | None = None
    factor: int = RDEDOptions.factor  #: rded: real views per side of an image (2: 2x2 stitched)
    views: int = RDEDOptions.views  #: rded: random views scored per real image, itself included
    #: rded: top (the views the model scores highest) or spread (evenly over its scores)
    select: str = RDEDOptions.select
    #: rded: real images per class drawn at random to be scored (0: every image)
    candidates: int = RDEDOptions.candidates
    #: None: the method's (dm 1000, 500 on CPU; gm 200; tm 500; sre2l 200)
    iterations: int | None = None
    lr_images: float | None = None  #: None: the method's
    soft_labels: bool = False  #: learn soft labels too (gm, tm)
    width: int | None = None  #: ConvNet channels; None: 128 on GPU, 32 on CPU
    batch_real: int | None = None  #: dm, gm: real images per class per step; None: 128 / 64
    with_labeled: bool = False  #: add the labeled set to the source
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        _check_int("images_per_class", self.images_per_class, 1)
        METHODS.check(self.method)
        check_soft_labels(self.method, self.soft_labels)
        if self.size is not None:
            _check_int("size", self.size, MIN_SIZE, unit=" px")
        for name in ("iterations", "width", "batch_real", "factor", "views"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1)
        check_select(self.select)
        _check_int("candidates", self.candidates, 0)
        need = self.images_per_class * self.factor ** 2
        if 0 < self.candidates < need:
            raise OmniferError(f"candidates is {self.candidates}, fewer than the {need} images "
                               "a class needs (images per class x factor^2); use at least "
                               f"{need}, or 0 to score every image")
        lr = self.lr_images
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float))
                               or not math.isfinite(lr) or lr <= 0):
            raise OmniferError(f"lr_images is {lr!r}; use a finite number above 0, e.g. 0.01")
        if self.method == "rded" and (self.iterations or self.lr_images):
            raise OmniferError("rded selects real views and learns no pixels; drop --iterations "
                               "and --lr-images, or pick a learning method (--method dm)")
        parse_device(self.device)

    def resolved(self, gpu: bool) -> DistillConfig:
        """This config with the device-dependent defaults filled: ``width`` 128 on GPU and 32 on
        CPU, ``batch_real`` 128 and 64, and dm's ``iterations`` 500 on CPU (a CPU step costs
        seconds); the other unset knobs keep the method's defaults."""
        iterations = self.iterations
        if iterations is None and self.method == "dm" and not gpu:
            iterations = 500
        return self.replace(width=self.width or (128 if gpu else 32),
                            batch_real=self.batch_real or (128 if gpu else 64),
                            iterations=iterations)

    def distill_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`omnifer.distill.distill` this config sets (``size``
        and ``with_labeled`` describe the data, not the distillation; ``factor``, ``views``,
        ``select`` and ``candidates`` are rded's options; unset knobs are left to ``distill``'s
        defaults)."""
        rded = ("factor", "views", "select", "candidates")
        out = {k: v for k, v in self.to_dict().items()
               if k not in ("size", "with_labeled", *rded) and v is not None}
        if self.method == "rded":
            out["options"] = {k: getattr(self, k) for k in rded}
        return out
