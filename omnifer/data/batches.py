"""Training batches cut from the decoded-image cache (:mod:`omnifer.data.cache`), with
augmentation (flip, shift, brightness/contrast) on the batch tensor, driven by an explicit
generator. Imports torch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class BatchMaker:
    """Turns rows of the uint8 image array into normalised float batches on ``device``."""

    def __init__(self, images: np.ndarray, *, mean: Sequence[float], std: Sequence[float],
                 device: torch.device) -> None:
        self.images = images
        self.device = device
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    def __call__(self, rows: np.ndarray, *, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        """Rows -> [B, 3, S, S] float (channels-last memory), augmented when ``generator``."""
        order = np.argsort(rows, kind="stable")  # sequential reads from the memory map
        data = np.empty((len(rows),) + self.images.shape[1:], dtype=np.uint8)
        data[order] = self.images[rows[order]]
        x = torch.from_numpy(data).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        if generator is not None:
            x = augment(x, generator)
        return (x - self.mean) / self.std


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip, shift by up to 1/16 of the size, brightness and contrast."""
    b, _, s, _ = x.shape
    g = generator
    flip = torch.rand(b, generator=g) < 0.5
    x = torch.where(flip.to(x.device).view(b, 1, 1, 1), x.flip(3), x)
    pad = max(1, s // 16)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b), generator=g).tolist()
    x = torch.stack([padded[i, :, dy[i]:dy[i] + s, dx[i]:dx[i] + s] for i in range(b)])
    gain = (0.8 + 0.4 * torch.rand(b, 2, generator=g)).to(x.device)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * gain[:, 0].view(b, 1, 1, 1) + mean * gain[:, 1].view(b, 1, 1, 1)
    return x.clamp_(0.0, 1.0).contiguous(memory_format=torch.channels_last)
