"""``dm``, distribution matching: each iteration draws a fresh random ConvNet and matches the
per-class mean embeddings of augmented real and synthetic batches (siamese DSA).

The loss is the sum over classes of the squared distance between the two mean embeddings.
Classes pass through the network one at a time, real then synthetic, as in the reference
implementation (Zhao & Bilen, VICO-UoE/DatasetCondensation ``main_DM.py``): on a CPU this is
faster than one pass over all classes' images at once, whose activations outgrow the caches.
"""

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
    # 0.002 keeps faces recognisable to a FER model (0.05 turns them into colour noise)
    iterations, lr_images, learns_labels = 1000, 0.002, False

    def __init__(self, run: Run, opts: DMOptions, **_: Any):
        self.opts = opts

    def step(self, run: Run) -> float:
        import torch

        from omnifer.distill.augment import dsa

        net = run.net().requires_grad_(False)
        if run.device.type == "cpu":  # oneDNN's channels-last kernels are faster at width 128
            net = net.to(memory_format=torch.channels_last)
        seeds = [run.seed() for _ in range(run.n_classes)]  # one siamese transform per class
        loss = 0.0
        for c, seed in enumerate(seeds):  # class by class: small batches run faster on CPU
            real = dsa(run.real_batch(c, self.opts.batch_real), seed, run.strategy)
            with torch.no_grad():
                real_mean = net(real, embed=True).mean(0)
            syn_mean = net(dsa(run.syn[run.rows(c)], seed, run.strategy), embed=True).mean(0)
            loss = loss + (real_mean - syn_mean).pow(2).sum()
        run.update(loss)
        return float(loss.detach())
