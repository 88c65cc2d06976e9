"""The primitive model as the distillation's teacher: whether it recognises images as their
label, and its probabilities for image arrays (also differentiable, with its batch-norm layers)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omnifer.pipeline.embeddings import image_cache


def agreement(ws: Any, model_run: Path, data: Any, device: str) -> np.ndarray:
    """Whether the primitive model classifies each image of ``data`` as its label: synthetic
    images it does not recognise teach a FER network little."""
    from omnifer.data.batches import BatchMaker
    from omnifer.data.cache import decoded_images
    from omnifer.device import resolve_device
    from omnifer.models import load_models
    from omnifer.models.inference import ensemble, predict

    dev = resolve_device(device)
    models = load_models(model_run, device=dev)
    cfg = models[0].config
    maker = BatchMaker(decoded_images(data, cfg.input_size, image_cache(ws)), mean=cfg.mean,
                       std=cfg.std, device=dev)
    rows = np.arange(len(data))
    probs = ensemble(models, [predict(m, maker, rows) for m in models])["expression_probs"]
    predicted = np.asarray(cfg.expressions)[probs.argmax(1)]
    return predicted == np.asarray(data.expressions)[data.table["expression"].to_numpy(np.int64)]


def primitive_model(ws: Any, model: Any, source: Any) -> Path | None:
    """The model that judges distilled images: ``model`` (a train run or checkpoint folder),
    else the one that mined ``source`` (a mine run; None: the latest), else the latest train
    run, else None."""
    from omnifer.errors import OmniferError
    from omnifer.pipeline import resolve

    if model is not None:
        return resolve.train_run(ws, model)
    try:
        mined = resolve.run(ws, source, "mine")
    except OmniferError:
        mined = None
    if mined is not None and mined.run.config.get("model"):
        return ws.locate(mined.run.config["model"])
    latest = ws.latest("train")
    return latest.path if latest is not None else None


def model_input_size(model_run: Path) -> int:
    """The input side in pixels of the model(s) at ``model_run``."""
    from omnifer.models import load_models

    return int(load_models(model_run)[0].config.input_size)


def teacher(model_run: Path, classes: Sequence[str], device: str) -> Judge:
    """The model(s) at ``model_run`` as a teacher of ``classes`` (see :class:`Judge`)."""
    from omnifer.device import resolve_device
    from omnifer.errors import OmniferError
    from omnifer.models import load_models

    models = load_models(model_run, device=resolve_device(device))
    expressions = list(models[0].config.expressions)
    missing = [c for c in classes if c not in expressions]
    if missing:
        raise OmniferError(f"the model at {model_run} has no class {missing[0]!r}; pass a model "
                           "trained on the same expression classes (--model)")
    return Judge(models, [expressions.index(c) for c in classes])


class Judge:
    """``judge(images)``: the model's (ensemble's, temperature-scaled) probabilities of its
    ``cols`` classes for float images ``[B, 3, H, W]`` in [0, 1] (resized to its input size);
    :meth:`log_probs` is the same as a differentiable tensor, and :meth:`batchnorms` gives each
    model's batch-norm layers, for methods that learn images from the model."""

    def __init__(self, models: Sequence[Any], cols: Sequence[int]) -> None:
        import torch

        for m in models:
            m.eval().requires_grad_(False)
        cfg = models[0].config
        self.models, self.cols, self.size = list(models), list(cols), int(cfg.input_size)
        self.device = next(models[0].parameters()).device
        self.mean = torch.tensor(cfg.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.std, device=self.device).view(1, 3, 1, 1)

    def inputs(self, images: Any) -> Any:
        """``images`` on the model's device, at its size, normalised."""
        import torch
        import torch.nn.functional as F

        x = images.to(self.device, torch.float32)
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size,) * 2, mode="bilinear", antialias=True,
                              align_corners=False)
        return (x - self.mean) / self.std

    def __call__(self, images: Any) -> np.ndarray:
        import torch

        from omnifer.models.inference import ensemble, predict

        with torch.inference_mode():
            x = self.inputs(images)
            rows = np.arange(len(x))
            out = ensemble(self.models, [predict(m, lambda r: x[r], rows, batch_size=len(x) or 1)
                                         for m in self.models])
        return out["expression_probs"][:, self.cols]

    def log_probs(self, images: Any) -> Any:
        """Log of the ensemble's temperature-scaled probabilities of the ``cols`` classes
        (renormalised over them), differentiable in ``images``."""
        import torch

        x = self.inputs(images)
        logs = [(m(x)["expression"][:, self.cols] / m.config.temperature).log_softmax(1)
                for m in self.models]
        return torch.logsumexp(torch.stack(logs), 0) - math.log(len(logs))

    def batchnorms(self) -> list[list[Any]]:
        """Each model's batch-norm layers, in the order its forward pass meets them."""
        from torch import nn

        return [[layer for layer in m.modules() if isinstance(layer, nn.BatchNorm2d)]
                for m in self.models]
