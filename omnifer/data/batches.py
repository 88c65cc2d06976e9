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

    def __call__(self, rows: np.ndarray, *, generator: torch.Generator | None = None,
                 part: slice | None = None) -> torch.Tensor:
        """Rows -> [B, 3, S, S] float (channels-last memory), augmented when ``generator``.

        With ``part``, only those rows of the batch are made, augmented exactly as in the
        whole batch (the generator draws for every row): a data-parallel rank's share."""
        params = augmentation(len(rows), self.images.shape[1], generator) \
            if generator is not None else None
        if part is not None:
            rows = rows[part]
            if params is not None:
                params = {k: v[part] for k, v in params.items()}
        order = np.argsort(rows, kind="stable")  # sequential reads from the memory map
        data = np.empty((len(rows),) + self.images.shape[1:], dtype=np.uint8)
        data[order] = self.images[rows[order]]
        x = torch.from_numpy(data).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        if params is not None:
            x = augment(x, params)
        return (x - self.mean) / self.std


def augmentation(b: int, s: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random parameters for ``b`` images of ``s`` pixels: horizontal flip, shift by up to
    1/16 of the size, brightness and contrast gains."""
    pad = max(1, s // 16)
    flip = torch.rand(b, generator=generator) < 0.5
    shift = torch.randint(0, 2 * pad + 1, (2, b), generator=generator).T
    gain = 0.8 + 0.4 * torch.rand(b, 2, generator=generator)
    return {"flip": flip, "shift": shift, "gain": gain}


def augment(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """``x`` [B, 3, S, S] in [0, 1] augmented with :func:`augmentation`'s parameters."""
    b, _, s, _ = x.shape
    x = torch.where(params["flip"].to(x.device).view(b, 1, 1, 1), x.flip(3), x)
    pad = max(1, s // 16)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
    shifts = params["shift"].tolist()
    x = torch.stack([padded[i, :, dy:dy + s, dx:dx + s] for i, (dy, dx) in enumerate(shifts)])
    gain = params["gain"].to(x.device)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * gain[:, 0].view(b, 1, 1, 1) + mean * gain[:, 1].view(b, 1, 1, 1)
    return x.clamp_(0.0, 1.0).contiguous(memory_format=torch.channels_last)
