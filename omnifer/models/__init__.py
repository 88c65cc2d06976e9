"""Models: backbone registry, the multitask network and checkpoint save/load.

Importing this package imports torch; torchvision loads inside the backbone factories.
"""

from __future__ import annotations

from omnifer.models.backbones import BACKBONES, build_backbone, register_backbone
from omnifer.device import resolve_device
from omnifer.models.checkpoint import (load_checkpoint, load_models, read_model_config,
                                       save_checkpoint)
from omnifer.models.model import (
    ModelConfig,
    MultitaskModel,
    bin_centres,
    build_model,
    load_backbone_weights,
    va_quadrant,
)

__all__ = [
    "BACKBONES",
    "ModelConfig",
    "MultitaskModel",
    "bin_centres",
    "build_backbone",
    "build_model",
    "load_backbone_weights",
    "load_checkpoint",
    "load_models",
    "read_model_config",
    "register_backbone",
    "resolve_device",
    "save_checkpoint",
    "va_quadrant",
]
