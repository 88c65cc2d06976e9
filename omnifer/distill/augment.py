"""Differentiable siamese augmentation (DSA) as plain tensor operations.

Every operation is differentiable with respect to the images, so a loss on augmented
synthetic images reaches the pixels. The random parameters come from a ``torch.Generator``
seeded with the ``seed`` of the call (never the global random state): calling :func:`dsa`
with the same seed on the real and on the synthetic batch of a step applies the same
transform to both (the siamese property). With ``shared=True`` (the default) one transform
serves the whole batch, so batches of different sizes match; ``shared=False`` draws one
transform per image (for training networks).

Operations, in the order they apply to images in ``[0, 1]``:

``color``   brightness shift U(-0.2, 0.2), saturation factor U(0, 2) (3-channel only),
            contrast factor U(0.5, 1.5)
``flip``    horizontal flip with probability 1/2 (off for digits: they are not symmetric)
``scale``   per-axis zoom U(0.8, 1.2)
``rotate``  rotation U(-15, 15) degrees
``crop``    translation by up to 1/8 of the size in each direction (zero padding)
``cutout``  a zeroed square of half the size at a uniform position

flip, scale, rotate and crop compose into one affine warp (one bilinear resampling).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from omnifer.distill.strategy import DEFAULT_STRATEGY, parse_strategy


def draw_seed(gen: torch.Generator) -> int:
    """A fresh 62-bit seed from ``gen`` (one per augmentation call or network)."""
    return int(torch.randint(2**62, (1,), generator=gen))


def dsa(x: torch.Tensor, seed: int, strategy: str | Iterable[str] | None = DEFAULT_STRATEGY,
        *, shared: bool = True) -> torch.Tensor:
    """Augment ``[B, C, H, W]`` images with the transform drawn from ``seed``."""
    ops = parse_strategy(strategy)
    if not ops or x.shape[0] == 0:
        return x
    gen = torch.Generator().manual_seed(int(seed) % (2**63))
    n = 1 if shared else x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:  # [n] on the images' device and dtype
        return (lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)).to(x)

    def per_image(v: torch.Tensor) -> torch.Tensor:
        return v.view(-1, 1, 1, 1)

    if "color" in ops:
        x = x + per_image(uniform(-0.2, 0.2))
        saturation = per_image(uniform(0.0, 2.0))
        if x.shape[1] > 1:
            grey = x.mean(1, keepdim=True)
            x = (x - grey) * saturation + grey
        mean = x.mean((1, 2, 3), keepdim=True)
        x = (x - mean) * per_image(uniform(0.5, 1.5)) + mean

    if {"flip", "scale", "rotate", "crop"} & set(ops):
        one = torch.ones(n, dtype=x.dtype, device=x.device)
        flip = torch.where(uniform(0, 1) < 0.5, -one, one) if "flip" in ops else one
        sx, sy = (uniform(0.8, 1.2), uniform(0.8, 1.2)) if "scale" in ops else (one, one)
        angle = uniform(-15, 15) * (math.pi / 180) if "rotate" in ops else 0 * one
        tx, ty = (uniform(-0.25, 0.25), uniform(-0.25, 0.25)) if "crop" in ops else (0 * one,) * 2
        cos, sin = torch.cos(angle), torch.sin(angle)
        # output grid point p samples the input at R(angle) S(sx, sy) F p + t (coords in [-1, 1])
        theta = torch.stack([
            torch.stack([cos * sx * flip, -sin * sy, tx], 1),
            torch.stack([sin * sx * flip, cos * sy, ty], 1),
        ], 1)
        grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    if "cutout" in ops:
        h, w = x.shape[-2:]
        cy, cx = uniform(0, 1) * h, uniform(0, 1) * w
        rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1) + 0.5
        cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w) + 0.5
        inside = (((rows - cy.view(-1, 1, 1)).abs() < h / 4)
                  & ((cols - cx.view(-1, 1, 1)).abs() < w / 4))
        x = x * (~inside).unsqueeze(1).to(x.dtype)
    return x
