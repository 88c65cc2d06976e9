"""``gm``, gradient matching: per class, the gradients of the classification loss w.r.t. the
weights on real and synthetic batches are matched (layer-wise cosine distance); between image
updates the network trains on the synthetic set (outer/inner loops)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from omnifer.distill.methods.base import METHODS

if TYPE_CHECKING:
    import torch

    from omnifer.distill.methods.state import Run


@dataclass(frozen=True)
class GMOptions:
    batch_real: int = 128           # real images per class per matching step
    outer_loop: int | None = None   # image updates per network; None: by ipc (DC's table)
    inner_loop: int | None = None   # epochs on the synthetic set between updates; None: by ipc
    net_lr: float = 0.01
    lr_labels: float = 0.01


def _loops(ipc: int) -> tuple[int, int]:
    """(outer, inner) loops by images per class, after the DC paper's settings."""
    for limit, loops in ((1, (1, 1)), (10, (10, 50)), (20, (20, 25)), (30, (30, 20)),
                         (40, (40, 15))):
        if ipc <= limit:
            return loops
    return 50, 10


def gradient_distance(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    """Layer-wise distance: sum over output units of (1 - cosine) of the weight gradients.

    1-D parameters (biases, norm scales) are left out, as in the gradient-matching paper.
    """
    import torch.nn.functional as F

    total = a[0].new_zeros(())
    for ga, gb in zip(a, b):
        if ga.dim() < 2:
            continue
        ga, gb = ga.reshape(ga.shape[0], -1), gb.reshape(gb.shape[0], -1)
        total = total + (1 - F.cosine_similarity(ga, gb, dim=1, eps=1e-6)).sum()
    return total


@METHODS.register("gm")
class GradientMatching:
    """Match per-class weight gradients on real and synthetic batches; train the net between."""

    options = GMOptions
    iterations, lr_images, learns_labels = 200, 0.01, True

    def __init__(self, run: Run, opts: GMOptions, **_: Any):
        self.opts = opts
        outer, inner = _loops(run.ipc)
        self.outer = opts.outer_loop or outer
        self.inner = inner if opts.inner_loop is None else opts.inner_loop

    def step(self, run: Run) -> float:
        import torch
        import torch.nn.functional as F

        from omnifer.distill.augment import dsa
        from omnifer.distill.networks import train_network

        net = run.net()
        params = list(net.parameters())
        losses = []
        for outer in range(self.outer):
            loss = net.classifier.weight.new_zeros(())
            targets = run.targets()
            for c in range(run.n_classes):
                seed = run.seed()
                real = dsa(run.real_batch(c, self.opts.batch_real), seed, run.strategy)
                real_y = torch.full((real.shape[0],), c, device=run.device)
                g_real = torch.autograd.grad(F.cross_entropy(net(real), real_y), params)
                syn = dsa(run.syn[run.rows(c)], seed, run.strategy)
                g_syn = torch.autograd.grad(F.cross_entropy(net(syn), targets[run.rows(c)]),
                                            params, create_graph=True)
                loss = loss + gradient_distance([g.detach() for g in g_real], g_syn)
            run.update(loss)
            losses.append(float(loss.detach()))
            if outer + 1 < self.outer and self.inner > 0:
                train_network(net, run.syn.detach(), run.targets().detach(), epochs=self.inner,
                              lr=self.opts.net_lr, momentum=0.5, batch_size=256, gen=run.gen,
                              augment=run.strategy)
        return float(np.mean(losses))
