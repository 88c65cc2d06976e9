"""Teacher labels on every augmented view of chosen sources (``TrainConfig.relabel``).

A student's soft labels are normally the teacher's outputs on each image, computed once
(:func:`omnifer.train.loop.teacher_soft_targets`). Rows of a relabeled source (a distilled
set of a few images per class, typically) are instead cut to a random resized crop each time
they are drawn, and the teacher labels that very view, as FKD and RDED train their students.
The crop keeps a share in :data:`SCALE` of the image's area, with an aspect ratio between 3/4
and 4/3; the teacher sees the view at its own input size and normalisation. It costs one
teacher pass per relabeled draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from omnifer.data.table import LabeledSet
from omnifer.errors import OmniferError
from omnifer.models import ModelConfig, MultitaskModel
from omnifer.train.config import TrainConfig
from omnifer.train.losses import soft_targets

SCALE = (0.35, 1.0)  #: share of the image's area a relabeled view keeps


def crop_params(b: int, generator: torch.Generator, scale: tuple[float, float] = SCALE
                ) -> torch.Tensor:
    """[b, 4] random crops as (width, height, centre x, centre y) in [-1, 1] image units."""
    area = scale[0] + (scale[1] - scale[0]) * torch.rand(b, generator=generator)
    log_ratio = (torch.rand(b, generator=generator) * 2 - 1) * math.log(4 / 3)
    ratio = torch.exp(log_ratio)
    w = torch.sqrt(area * ratio).clamp(max=1.0)
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (1 - w) * (torch.rand(b, generator=generator) * 2 - 1)
    cy = (1 - h) * (torch.rand(b, generator=generator) * 2 - 1)
    return torch.stack([w, h, cx, cy], dim=1)


def crop(x: torch.Tensor, params: torch.Tensor, size: int) -> torch.Tensor:
    """The crops of :func:`crop_params` of ``x`` [B, C, H, W], resized to ``size`` pixels
    (bilinear)."""
    p = params.to(x.device, x.dtype)
    theta = torch.zeros(len(x), 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 1, 1] = p[:, 0], p[:, 1]  # width, height
    theta[:, 0, 2], theta[:, 1, 2] = p[:, 2], p[:, 3]  # centre
    grid = F.affine_grid(theta, [len(x), x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class Relabeler:
    """Replaces the rows of relabeled sources in a training batch by random crops and their
    soft targets by the teachers' outputs on those crops."""

    def __init__(self, teachers: Sequence[MultitaskModel], rows: torch.Tensor, *,
                 student: ModelConfig, temperature: float, embeddings: bool) -> None:
        self.teachers = [t.eval() for t in teachers]
        self.rows = rows  #: bool [N]: rows of the data that are relabeled
        self.size = student.input_size
        self.temperature, self.embeddings = temperature, embeddings
        self.student_norm = _norm(student)
        self.teacher_cfg = self.teachers[0].config
        self.same_input = (self.teacher_cfg.input_size == student.input_size
                           and _norm(self.teacher_cfg) == self.student_norm)

    def __call__(self, idx: torch.Tensor, x: torch.Tensor, targets: dict[str, torch.Tensor],
                 generator: torch.Generator, part: slice | None = None
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``x`` (this process's ``part`` of the batch ``idx``) and its soft ``targets`` with
        the relabeled rows replaced. Draws from ``generator`` for every row of the batch, so
        that every process of a data-parallel run stays in step."""
        params = crop_params(len(idx), generator)
        hit = self.rows[idx]
        if part is not None:
            hit, params = hit[part], params[part]
        if not bool(hit.any()):
            return x, targets
        hit = hit.to(x.device)
        views = crop(x[hit], params[hit.cpu()], self.size)
        x = x.clone()
        x[hit] = views.to(x.dtype)
        with torch.no_grad():
            tx = views if self.same_input else self._for_teacher(views)
            fresh = soft_targets([t(tx) for t in self.teachers], self.temperature,
                                 embeddings=self.embeddings)
        out = dict(targets)
        for key, value in fresh.items():
            if key in out:
                out[key] = out[key].clone()
                out[key][hit] = value.to(out[key].dtype)
        return x, out

    def _for_teacher(self, views: torch.Tensor) -> torch.Tensor:
        """Student-normalised views -> the teacher's input size and normalisation."""
        s_mean, s_std = (torch.tensor(v, device=views.device).view(1, 3, 1, 1)
                         for v in self.student_norm)
        t_mean, t_std = (torch.tensor(v, device=views.device).view(1, 3, 1, 1)
                         for v in _norm(self.teacher_cfg))
        raw = views * s_std + s_mean
        size = self.teacher_cfg.input_size
        if size != raw.shape[-1]:
            raw = F.interpolate(raw, size=(size, size), mode="bilinear", align_corners=False,
                                antialias=size < raw.shape[-1])
        return (raw - t_mean) / t_std


def relabeler_for(labeled: LabeledSet, config: TrainConfig,
                  teachers: Sequence[MultitaskModel], student: ModelConfig) -> Relabeler | None:
    """The :class:`Relabeler` of ``config.relabel``'s sources (None for none); one line when
    a source is not in ``labeled`` or there is no teacher."""
    sources = config.relabel
    if not sources:
        return None
    if not teachers:
        raise OmniferError(f"relabel={','.join(sources)} needs a teacher; train a student "
                           "(--student) or drop --relabel")
    for name in sources:
        if name not in labeled.sources:
            raise OmniferError(f"relabel names {name!r}, but no training sample comes from it; "
                               f"sources: {', '.join(labeled.sources)}")
    rows = np.isin(labeled.table["source"].to_numpy(object), list(sources))
    return Relabeler(teachers, torch.from_numpy(rows), student=student,
                     temperature=config.temperature, embeddings="structural" in config.kd)


def _norm(cfg: ModelConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return tuple(cfg.mean), tuple(cfg.std)
