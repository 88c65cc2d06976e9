"""Dataset distillation: learn a few synthetic images per class, and evaluate them.

Everything works on arrays (images ``[N, C, H, W]`` float32 in [0, 1], labels int64 ``[N]``):

* :class:`DistillConfig`, :class:`DistillEvaluateConfig` -- the knobs of ``omnifer distill``
  and ``omnifer distill evaluate``
* :func:`distill` (methods ``dm``, ``gm``, ``tm``, one module each under ``methods/``; registry
  :data:`METHODS`) -> :class:`Distilled`
* :func:`train_experts` -- expert trajectories for ``tm``, cached on disk
* coresets of the same size: :func:`random_subset`, :func:`herding`, :func:`k_center`
  (registry :data:`CORESETS`)
* :func:`evaluate_sets` -- train fresh ConvNets on each set only and score them on a test set

Names load on first use, so importing this package does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DistillConfig": "config", "DistillEvaluateConfig": "evaluate_config",
    "DEFAULT_STRATEGY": "strategy", "NO_FLIP_STRATEGY": "strategy", "dsa": "augment",
    "ConvNet": "networks", "build_convnet": "networks", "functional_forward": "networks",
    "Distilled": "methods", "METHODS": "methods", "distill": "methods",
    "train_experts": "methods", "trajectory_gradient": "methods",
    "CORESETS": "coreset", "herding": "coreset", "k_center": "coreset",
    "random_subset": "coreset", "select_coreset": "coreset",
    "evaluate_sets": "protocol",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'omnifer.distill' has no attribute {name!r}")
    return getattr(importlib.import_module(f"omnifer.distill.{_EXPORTS[name]}"), name)
