"""The small ConvNet of the dataset-distillation literature, with a functional forward.

``depth`` blocks of conv 3x3 (``width`` channels) -> instance norm -> ReLU -> 2x2 average
pool, then one linear layer. The depth follows the input size so that the last feature map
is 4 to 7 pixels wide (8 px -> 1 block, 16 -> 2, 32 -> 3, 64 -> 4, 112 -> 4, 128 -> 5).

Images enter in ``[0, 1]``; the network normalises them with the per-channel mean and std of
the real data it was built with, so every method and every evaluation arm sees the same input
path. Weights are initialised from an explicit seed (PyTorch's default scheme), never from
the global random state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from omnifer.distill.augment import draw_seed, dsa
from omnifer.distill.coreset import check_labels
from omnifer.errors import OmniferError


def default_depth(size: int) -> int:
    """Number of conv blocks for ``size`` px inputs: the last feature map is 4..7 px wide."""
    return max(1, int(math.floor(math.log2(max(size, 8) / 4))))


class ConvNet(nn.Module):
    """ConvNet-``depth``, ``width`` channels, instance norm, ReLU, average pooling."""

    def __init__(self, channels: int, size: int, n_classes: int, *, width: int = 128,
                 depth: int | None = None):
        super().__init__()
        depth = default_depth(size) if depth is None else int(depth)
        if depth < 1 or size >> depth < 1:
            raise OmniferError(
                f"depth {depth} does not fit {size} px inputs; use 1..{int(math.log2(size))} "
                "or leave depth unset"
            )
        layers: list[nn.Module] = []
        c = channels
        for _ in range(depth):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.GroupNorm(width, width),
                       nn.ReLU(), nn.AvgPool2d(2)]
            c = width
        self.features = nn.Sequential(*layers)
        self.feature_dim = width * (size >> depth) ** 2
        self.classifier = nn.Linear(self.feature_dim, n_classes)
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))

    def forward(self, x: torch.Tensor, embed: bool = False) -> torch.Tensor:
        """Logits ``[B, K]``, or the flattened features ``[B, D]`` when ``embed``."""
        h = self.features((x - self.mean) / self.std).flatten(1)
        return h if embed else self.classifier(h)


def as_images(images: object, name: str = "images") -> torch.Tensor:
    """``images`` as a float32 CPU tensor ``[N, C, H, W]`` (C = 1 or 3, H = W) in ``[0, 1]``."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[2] != x.shape[3] or x.shape[0] == 0:
        raise OmniferError(
            f"{name} have shape {tuple(x.shape)}; pass square images [N, C, H, W] with C = 1 or 3 "
            "(resize them to one size first)"
        )
    x = x.detach().to("cpu", torch.float32)
    lo, hi = float(x.min()), float(x.max())
    if not (0.0 <= lo and hi <= 1.0):  # also catches NaN
        raise OmniferError(
            f"{name} hold values in [{lo:.3g}, {hi:.3g}]; scale them to [0, 1] (e.g. divide by 255)"
        )
    return x.contiguous()


def check_data(images: object, labels: object, n_classes: int,
               images_per_class: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked images (see :func:`as_images`) and int64 labels in ``[0, n_classes)``, one per
    image; with ``images_per_class``, every class must hold at least that many images."""
    x = as_images(images)
    y, _ = check_labels(np.asarray(labels), images_per_class, n_classes)
    if y.shape[0] != x.shape[0]:
        raise OmniferError(f"{x.shape[0]} images but {y.shape[0]} labels; pass one label per image")
    return x, torch.from_numpy(y)


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of ``[N, C, H, W]`` images (std floored at 1e-3)."""
    x = images.detach().double().transpose(0, 1).reshape(images.shape[1], -1)
    return x.mean(1).tolist(), x.std(1).clamp_min(1e-3).tolist()


def build_convnet(channels: int, size: int, n_classes: int, seed: int, *, width: int = 128,
                  depth: int | None = None, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None,
                  device: torch.device | str = "cpu") -> ConvNet:
    """A freshly initialised :class:`ConvNet`; the same seed gives the same weights anywhere."""
    with torch.device("meta"):
        net = ConvNet(channels, size, n_classes, width=width, depth=depth)
    net = net.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=gen)
                bound = 1.0 / math.sqrt(m.weight[0].numel())
                nn.init.uniform_(m.bias, -bound, bound, generator=gen)
            elif isinstance(m, nn.GroupNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()
        net.mean.copy_(torch.tensor(mean if mean is not None else [0.0] * channels,
                                    dtype=torch.float32).view(1, -1, 1, 1))
        net.std.copy_(torch.tensor(std if std is not None else [1.0] * channels,
                                   dtype=torch.float32).view(1, -1, 1, 1))
    return net.to(device)


# ---------------------------------------------------------------- functional use

def flat_params(net: nn.Module) -> torch.Tensor:
    """All parameters of ``net`` as one detached vector (the layout :func:`unflatten` reads)."""
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def unflatten(net: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split a flat parameter vector into ``{name: tensor}`` views (differentiable)."""
    names, shapes = zip(*[(n, p.shape) for n, p in net.named_parameters()])
    chunks = torch.split(flat, [math.prod(s) for s in shapes])
    return {n: c.view(s) for n, c, s in zip(names, chunks, shapes)}


def functional_forward(net: nn.Module, params: dict[str, torch.Tensor] | torch.Tensor,
                       x: torch.Tensor, *, embed: bool = False) -> torch.Tensor:
    """``net(x)`` with explicit parameters (a ``{name: tensor}`` dict or a flat vector)."""
    if isinstance(params, torch.Tensor):
        params = unflatten(net, params)
    return torch.func.functional_call(net, params, (x,), {"embed": embed})


# ---------------------------------------------------------------- training

def train_network(net: nn.Module, images: torch.Tensor, targets: torch.Tensor, *, epochs: int,
                  lr: float, batch_size: int, gen: torch.Generator, momentum: float = 0.0,
                  weight_decay: float = 0.0, decay_epochs: Sequence[int] = (),
                  augment: object = None, on_epoch=None) -> nn.Module:
    """Train ``net`` in place with SGD on ``images`` (class indices or probability targets).

    Each epoch visits a random permutation in batches; every batch gets its own per-image
    augmentation drawn from ``gen``; the learning rate is multiplied by 0.1 at each epoch of
    ``decay_epochs``. ``on_epoch(epoch)`` is called after each epoch (1-based).
    """
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    n = images.shape[0]
    for epoch in range(epochs):
        if epoch in decay_epochs:
            for group in opt.param_groups:
                group["lr"] *= 0.1
        order = torch.randperm(n, generator=gen).to(images.device)
        for start in range(0, n, batch_size):
            batch = order[start:start + batch_size]
            x = dsa(images[batch], draw_seed(gen), augment, shared=False)
            loss = F.cross_entropy(net(x), targets[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if on_epoch is not None:
            on_epoch(epoch + 1)
    return net


@torch.no_grad()
def predict(net: nn.Module, images: torch.Tensor, *, batch_size: int = 1024) -> np.ndarray:
    """Predicted classes ``[N]`` (int64), in blocks of ``batch_size``."""
    device = next(net.parameters()).device
    out = [net(images[i:i + batch_size].to(device)).argmax(1).cpu()
           for i in range(0, images.shape[0], batch_size)]
    return torch.cat(out).numpy().astype(np.int64)
