"""The primitive model as a function: uint8 face crops in, float16 embeddings out (and, with
:meth:`Embedder.features`, each face's feature norm)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from omnifer.device import resolve_device
from omnifer.models.checkpoint import load_models


class Embedder:
    """The primitive model as a function: uint8 crops [n, S, S, 3] -> float16 embeddings.

    Loads the first model of a checkpoint or run directory on ``device`` (``auto``, ``cpu``,
    ``cuda`` or ``cuda:N``); on a GPU it runs in half precision, channels-last.

    The feature norm is the L2 norm of a face's backbone features before they are standardised
    and normalised into the embedding: low for crops the model finds little of what it learned
    in (non-faces, heavily occluded faces), which mining's out-of-distribution check reads.
    """

    def __init__(self, model_path: str | Path, *, device: str = "auto",
                 batch_size: int = 256) -> None:
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
            for start in range(0, len(images), self.batch_size):
                x = torch.from_numpy(np.array(images[start:start + self.batch_size]))
                x = x.to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
                x = (x - self.mean) / self.std
                if self.half:
                    x = x.half()
                f = self.model.features(x)
                emb = self.model.embedding_norm(f).float()
                out[start:start + len(emb)] = emb.cpu().numpy()
                norms[start:start + len(emb)] = f.float().norm(dim=1).cpu().numpy()
        return out, norms
