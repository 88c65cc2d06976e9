"""Training: the multitask teacher/student loop, losses, calibration and evaluation.

Names are imported on first use, so ``omnifer.train.losses`` and friends load on their own.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "config",
    "evaluate_models": "evaluate", "predict": "evaluate", "task_metrics": "evaluate",
    "TrainResult": "loop", "history_of": "loop", "load_models": "loop",
    "resolve_device": "loop", "split_validation": "split", "train": "loop",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'omnifer.train' has no attribute {name!r}")
    return getattr(importlib.import_module(f"omnifer.train.{_EXPORTS[name]}"), name)
