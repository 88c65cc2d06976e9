"""The state of one distillation run that every method reads and updates."""

from __future__ import annotations

from typing import Any

import torch

from omnifer.distill.augment import draw_seed
from omnifer.distill.networks import build_convnet


class Run:
    """Real data per class, the synthetic set and its learnables, the optimizer, randomness."""

    def __init__(self, real: list[torch.Tensor], syn: torch.Tensor,
                 label_logits: torch.Tensor | None, *, ipc: int, strategy: tuple[str, ...],
                 gen: torch.Generator, net_args: dict[str, Any], device: torch.device):
        self.real, self.syn, self.label_logits = real, syn, label_logits
        self.ipc, self.n_classes, self.strategy = ipc, len(real), strategy
        self.gen, self.net_args, self.device = gen, net_args, device
        self.labels = torch.arange(self.n_classes, device=device).repeat_interleave(ipc)
        self.learnables: dict[str, torch.Tensor] = {"images": syn}
        if label_logits is not None:
            self.learnables["label_logits"] = label_logits
        self.optimizer: torch.optim.Optimizer | None = None

    def seed(self) -> int:
        return draw_seed(self.gen)

    def net(self) -> torch.nn.Module:
        return build_convnet(seed=self.seed(), device=self.device, **self.net_args)

    def rows(self, c: int) -> slice:
        return slice(c * self.ipc, (c + 1) * self.ipc)

    def real_batch(self, c: int, n: int) -> torch.Tensor:
        idx = torch.randperm(self.real[c].shape[0], generator=self.gen)[:n]
        return self.real[c][idx.to(self.device)]

    def targets(self) -> torch.Tensor:
        """Targets of the synthetic images: class indices, or learned label probabilities."""
        return self.labels if self.label_logits is None else self.label_logits.softmax(1)

    def update(self, loss: torch.Tensor | None = None) -> None:
        """One optimizer step on the learnables (from ``loss``, or from ``.grad`` set by hand)."""
        if loss is not None:
            params = list(self.learnables.values())
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for p, g in zip(params, grads):
                p.grad = torch.zeros_like(p) if g is None else g
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.syn.clamp_(0.0, 1.0)
