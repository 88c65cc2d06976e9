"""What every distillation method shares: the registry, the result type, option parsing.

A method is a class registered in :data:`METHODS` with the class attributes ``options`` (a
frozen dataclass of its knobs), ``iterations`` and ``lr_images`` (its defaults) and
``learns_labels``; ``Method(run, opts, **context)`` prepares it and ``step(run)`` makes one
update of the synthetic set and returns the loss. An optional ``param_groups(run)`` gives the
learning rates of learnables it adds. No torch here: listing and checking names stays cheap.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from omnifer.errors import OmniferError
from omnifer.registry import Registry

#: Distillation methods by name.
METHODS: Registry[type] = Registry("distillation method")

#: ``progress(done, total, info)``
Progress = Callable[[int, int, dict], None]


@dataclass(frozen=True)
class Distilled:
    """A distilled set: ``images`` float32 ``[K*ipc, C, H, W]`` in [0, 1], class by class."""

    images: np.ndarray
    labels: np.ndarray              # int64 [K*ipc]
    soft_labels: np.ndarray | None  # float32 [K*ipc, K] (rows sum to 1) when learned
    method: str
    iterations: int
    seconds: float                  # distillation time (summed over resumed runs)
    history: tuple[float, ...]      # loss per iteration
    mean: tuple[float, ...]         # per-channel normalisation of the real data
    std: tuple[float, ...]


def method_options(spec: type, options: dict[str, Any] | None) -> Any:
    """``spec.options`` filled from ``options``; unknown keys are a one-line error."""
    fields = {f.name for f in dataclasses.fields(spec.options)}
    bad = sorted(set(options or {}) - fields)
    if bad:
        raise OmniferError(
            f"unknown option {bad[0]!r} for this method; valid options: "
            f"{', '.join(sorted(fields))}"
        )
    return spec.options(**(options or {}))


def check_soft_labels(method: str, soft_labels: bool) -> None:
    """A one-line error when soft labels are asked of a method that does not learn them."""
    if soft_labels and not METHODS.get(method).learns_labels:
        able = " or ".join(repr(name) for name, spec in METHODS.items() if spec.learns_labels)
        raise OmniferError(
            f"method {method!r} does not learn labels; use soft_labels=False or method {able}"
        )
