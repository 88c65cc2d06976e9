"""The primitive model as a function: uint8 face crops in, float16 embeddings out (and, with
:meth:`Embedder.features`, each face's feature norm)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from omnifer.allocator import keep_freed_memory
from omnifer.device import resolve_device
from omnifer.errors import OmniferError
from omnifer.models.checkpoint import load_models


class Embedder:
    """The primitive model as a function: uint8 crops [n, S, S, 3] -> float16 embeddings.

    Loads the first model of a checkpoint or run directory on ``device`` (``auto``, ``cpu``,
    ``cuda`` or ``cuda:N``); on a GPU it runs in half precision, channels-last. Its process
    keeps freed memory (:func:`omnifer.allocator.keep_freed_memory`): every batch reuses the
    last one's buffers instead of faulting new pages in.

    The feature norm is the L2 norm of a face's backbone features before they are standardised
    and normalised into the embedding: low for crops the model finds little of what it learned
    in (non-faces, heavily occluded faces), which mining's out-of-distribution check reads.
    """

    def __init__(self, model_path: str | Path, *, device: str = "auto",
                 batch_size: int = 256) -> None:
        keep_freed_memory()
        self.device = resolve_device(device)
        self.model = load_models(model_path, device=self.device)[0].eval()
        cfg = self.model.config
        self.size, self.batch_size = cfg.input_size, batch_size
        self.half = self.device.type == "cuda"
        if self.half:
            self.model = self.model.to(memory_format=torch.channels_last).half()
        self.mean = torch.tensor(cfg.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.std, device=self.device).view(1, 3, 1, 1)

    @property
    def dim(self) -> int:
        return int(self.model.embedding_dim)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.features(images)[0]

    def features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float16 embeddings [n, D] and float32 feature norms [n] of ``images``."""
        out = np.zeros((len(images), self.dim), np.float16)
        norms = np.zeros(len(images), np.float32)
        with torch.inference_mode():
            for start, x in self._batches(images):
                f = self.model.features(x)
                emb = self.model.embedding_norm(f).float()
                out[start:start + len(emb)] = emb.cpu().numpy()
                norms[start:start + len(emb)] = f.float().norm(dim=1).cpu().numpy()
        return out, norms

    def activation_maps(self, images: np.ndarray) -> np.ndarray:
        """float32 [n, h, w]: the norm, at each position, of the backbone's last feature map
        before it is pooled into the features (what ``omnifer.mining.occlusion`` reads)."""
        pools = [m for m in self.model.backbone.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
        if not pools:
            raise OmniferError(f"the {self.model.config.backbone} backbone pools no feature map "
                               "(no AdaptiveAvgPool2d); it has no activation maps")
        taken: list[torch.Tensor] = []
        hook = pools[-1].register_forward_hook(
            lambda _m, inputs, _out: taken.append(inputs[0].float().norm(dim=1).cpu()))
        try:
            with torch.inference_mode():
                for _, x in self._batches(images):
                    self.model.features(x)
        finally:
            hook.remove()
        if not taken:
            return np.zeros((0, 0, 0), np.float32)
        return torch.cat(taken).numpy()

    def _batches(self, images: np.ndarray) -> Iterator[tuple[int, torch.Tensor]]:
        """(offset, normalised input batch on the device) over ``images`` [n, S, S, 3] uint8."""
        for start in range(0, len(images), self.batch_size):
            x = torch.from_numpy(np.array(images[start:start + self.batch_size]))
            x = x.to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
            x = (x - self.mean) / self.std
            yield start, (x.half() if self.half else x)
