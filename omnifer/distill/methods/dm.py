"""``dm``, distribution matching: each iteration draws a fresh random ConvNet and matches the
per-class mean embeddings of augmented real and synthetic batches (siamese DSA)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omnifer.distill.methods.base import METHODS

if TYPE_CHECKING:
    from omnifer.distill.methods.state import Run


@dataclass(frozen=True)
class DMOptions:
    batch_real: int = 128           # real images per class per iteration


@METHODS.register("dm")
class DistributionMatching:
    """Match per-class mean embeddings of a fresh random ConvNet each iteration."""

    options = DMOptions
    iterations, lr_images, learns_labels = 1000, 0.05, False

    def __init__(self, run: Run, opts: DMOptions, **_: Any):
        self.opts = opts

    def step(self, run: Run) -> float:
        import torch

        from omnifer.distill.augment import dsa

        net = run.net().requires_grad_(False)
        seeds = [run.seed() for _ in range(run.n_classes)]  # one siamese transform per class
        real = [dsa(run.real_batch(c, self.opts.batch_real), s, run.strategy)
                for c, s in enumerate(seeds)]
        syn = torch.cat([dsa(run.syn[run.rows(c)], s, run.strategy) for c, s in enumerate(seeds)])
        with torch.no_grad():  # one forward for all classes: the network treats images alone
            real_emb = net(torch.cat(real), embed=True).split([len(r) for r in real])
            real_mean = torch.stack([e.mean(0) for e in real_emb])
        syn_mean = net(syn, embed=True).view(run.n_classes, run.ipc, -1).mean(1)
        loss = (real_mean - syn_mean).pow(2).sum()
        run.update(loss)
        return float(loss.detach())
