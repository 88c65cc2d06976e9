"""Random resized crops with horizontal flips: the views RDED scores and the augmented copies
that fill a class with fewer images than requested.

A view keeps ``scale`` (a share of the image's area, drawn uniformly) at an aspect ratio drawn
log-uniformly from [3/4, 4/3], at a uniform position, resized back to the image's side
(bilinear). Faces are left-right symmetric in meaning, so half the views are mirrored.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_views(images: torch.Tensor, views: int, *, scale: tuple[float, float],
                 gen: torch.Generator, keep_first: bool = True) -> torch.Tensor:
    """``views`` views of each of ``images`` ``[N, C, H, W]`` -> ``[N, views, C, H, W]``;
    with ``keep_first``, view 0 is the image itself."""
    n = images.shape[0]
    m = n * views
    area = torch.empty(m).uniform_(*scale, generator=gen)
    log_ratio = torch.empty(m).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen)
    ratio = log_ratio.exp()
    w = (area * ratio).sqrt().clamp(max=1.0)  # shares of the side, in (0, 1]
    h = (area / ratio).sqrt().clamp(max=1.0)
    cx = (torch.rand(m, generator=gen) * 2 - 1) * (1 - w)  # centre keeps the crop inside
    cy = (torch.rand(m, generator=gen) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(m, generator=gen) < 0.5, -1.0, 1.0)
    if keep_first:
        first = torch.arange(0, m, views)
        w[first], h[first], cx[first], cy[first], flip[first] = 1.0, 1.0, 0.0, 0.0, 1.0
    theta = torch.zeros(m, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    src = images.repeat_interleave(views, dim=0)
    grid = F.affine_grid(theta.to(images.device, images.dtype), list(src.shape),
                         align_corners=False)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.clamp_(0.0, 1.0).view(n, views, *images.shape[1:])
