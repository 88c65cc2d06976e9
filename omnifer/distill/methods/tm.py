"""``tm``, trajectory matching: a student starts from an expert checkpoint (experts are networks
trained on the real data, see :func:`train_experts`), takes ``syn_steps`` SGD steps on the
synthetic set and should land near the expert ``expert_epochs`` later. The gradient w.r.t.
images, soft labels and the student learning rate is exact and built one step at a time
(:func:`trajectory_gradient`), so no step's graph outlives its step."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from omnifer.distill.methods.base import METHODS, Progress
from omnifer.distill.strategy import DEFAULT_STRATEGY, parse_strategy
from omnifer.errors import OmniferError

if TYPE_CHECKING:
    import torch

    from omnifer.distill.methods.state import Run


@dataclass(frozen=True)
class TMOptions:
    syn_steps: int = 20             # student steps N per iteration
    expert_epochs: int = 2          # the target is this many expert epochs after the start
    max_start_epoch: int = 10       # start epochs are drawn from [0, max_start_epoch)
    batch_syn: int | None = None    # synthetic images per student step; None: all
    lr_student: float = 0.01        # initial student learning rate (learned, in log space)
    lr_lr: float = 0.01             # Adam step on log(student lr)
    lr_labels: float = 0.01
    n_experts: int = 5              # experts trained when distill() gets none
    expert_train_epochs: int = 15


def trajectory_gradient(net: torch.nn.Module, start: torch.Tensor, target: torch.Tensor,
                        images: torch.Tensor, labels: torch.Tensor, lr: float,
                        steps: Sequence[tuple[torch.Tensor, int]],
                        strategy: Iterable[str] | None = None,
                        ) -> tuple[float, torch.Tensor, torch.Tensor | None, float]:
    """Loss and exact gradients of trajectory matching, one student step's graph at a time.

    The student starts at the flat parameters ``start`` and takes plain SGD steps
    ``theta_{i+1} = theta_i - lr * g_i`` with ``g_i`` the cross-entropy gradient on
    ``images[idx_i]`` (augmented with ``seed_i``) for ``(idx_i, seed_i)`` in ``steps``. The loss
    is ``|theta_N - target|^2 / |start - target|^2``. ``labels`` are class indices, or learnable
    logits (float ``[n, K]``; targets are their softmax).

    Forward: the N steps run without graphs, keeping only the parameter vectors (on the CPU
    when the work is on a GPU). Backward (adjoint): with ``lam = dloss/dtheta_{i+1}``, step i is
    rebuilt alone and ``<-lr * g_i, lam>`` is differentiated w.r.t. ``theta_i``, the images and
    the labels (one Hessian-vector product): ``lam`` becomes ``dloss/dtheta_i`` and the rest
    adds to the image and label gradients; ``dloss/dlr = -sum_i <lam_{i+1}, g_i>``. The graph
    of one step is freed before the next, so the graph memory does not grow with N; the result
    equals autograd through the whole unroll.

    Returns ``(loss, d/dimages, d/dlabels or None, d/dlr)``.
    """
    import torch
    import torch.nn.functional as F

    from omnifer.distill.augment import dsa
    from omnifer.distill.networks import functional_forward

    soft = labels.is_floating_point()
    park = torch.device("cpu")

    def step_loss(theta, idx, seed, x, y):
        out = functional_forward(net, theta, dsa(x[idx], seed, strategy))
        return F.cross_entropy(out, y[idx].softmax(1) if soft else y[idx])

    x0, y0 = images.detach(), labels.detach()
    theta = start.detach()
    visited = []
    for idx, seed in steps:
        visited.append(theta.to(park))
        th = theta.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(step_loss(th, idx, seed, x0, y0), th)
        theta = (theta - lr * g).detach()

    denom = (start - target).pow(2).sum()
    diff = theta - target
    loss = float(diff.pow(2).sum() / denom)
    lam = 2 * diff / denom
    x = x0.clone().requires_grad_(True)
    y = y0.clone().requires_grad_(True) if soft else y0
    grad_x = torch.zeros_like(x0)
    grad_y = torch.zeros_like(y0) if soft else None
    grad_lr = 0.0
    for (idx, seed), theta_i in zip(reversed(steps), reversed(visited)):
        th = theta_i.to(start.device).requires_grad_(True)
        (g,) = torch.autograd.grad(step_loss(th, idx, seed, x, y), th, create_graph=True)
        grad_lr -= float((g.detach() * lam).sum())
        inputs = [th, x] + ([y] if soft else [])
        grads = torch.autograd.grad((g * lam).sum() * -lr, inputs, allow_unused=True)
        lam = lam + grads[0]
        if grads[1] is not None:
            grad_x += grads[1]
        if soft and grads[2] is not None:
            grad_y += grads[2]
    return loss, grad_x, grad_y, grad_lr


@METHODS.register("tm")
class TrajectoryMatching:
    """Match expert trajectories from random start epochs (exact, step-by-step gradients)."""

    options = TMOptions
    iterations, lr_images, learns_labels = 500, 0.01, True

    def __init__(self, run: Run, opts: TMOptions, *, experts: list[torch.Tensor] | None,
                 real: tuple[torch.Tensor, torch.Tensor], seed: int, progress: Progress | None,
                 augment: tuple[str, ...], **_: Any):
        import torch

        from omnifer.distill.networks import build_convnet, flat_params

        self.opts = opts
        if experts is None:
            experts = train_experts(*real, n_classes=run.n_classes, n_experts=opts.n_experts,
                                    epochs=opts.expert_train_epochs, seed=seed,
                                    lr=opts.lr_student, augment=augment,
                                    width=run.net_args["width"], depth=run.net_args["depth"],
                                    device=str(run.device), progress=progress)
        self.experts = [torch.as_tensor(e, dtype=torch.float32) for e in experts]
        self.net = build_convnet(seed=0, device=run.device, **run.net_args)
        n_params = flat_params(self.net).numel()
        need = opts.max_start_epoch + opts.expert_epochs
        for i, e in enumerate(self.experts):
            if e.ndim != 2 or e.shape[1] != n_params:
                raise OmniferError(
                    f"expert {i} has shape {tuple(e.shape)} but the network has {n_params} "
                    "parameters; train experts on the same images with the same width and depth"
                )
            if e.shape[0] <= need:
                raise OmniferError(
                    f"expert {i} has {e.shape[0] - 1} epochs but max_start_epoch + expert_epochs "
                    f"= {need}; train experts for more than {need} epochs or lower those options"
                )
        self.log_lr = torch.tensor(math.log(opts.lr_student), device=run.device, requires_grad=True)
        run.learnables["log_lr"] = self.log_lr

    def param_groups(self, run: Run) -> dict[str, float]:
        return {"log_lr": self.opts.lr_lr}

    def step(self, run: Run) -> float:
        import torch

        o = self.opts
        expert = self.experts[int(torch.randint(len(self.experts), (1,), generator=run.gen))]
        begin = int(torch.randint(o.max_start_epoch, (1,), generator=run.gen))
        start = expert[begin].to(run.device)
        target = expert[begin + o.expert_epochs].to(run.device)
        n_syn = run.syn.shape[0]
        batch = min(o.batch_syn or n_syn, n_syn)
        steps = [(torch.randperm(n_syn, generator=run.gen)[:batch].to(run.device), run.seed())
                 for _ in range(o.syn_steps)]
        labels = run.labels if run.label_logits is None else run.label_logits
        lr = float(self.log_lr.detach().exp())
        loss, g_x, g_y, g_lr = trajectory_gradient(self.net, start, target, run.syn, labels, lr,
                                                   steps, run.strategy)
        run.syn.grad = g_x
        if run.label_logits is not None:
            run.label_logits.grad = g_y
        self.log_lr.grad = torch.tensor(g_lr * lr, device=run.device)
        run.update()
        return loss


def train_experts(images: object, labels: object, *, n_classes: int, n_experts: int = 5,
                  epochs: int = 15, cache_dir: str | os.PathLike | None = None, seed: int = 0,
                  lr: float = 0.01, batch_size: int = 256,
                  augment: str | Iterable[str] | None = DEFAULT_STRATEGY, width: int = 128,
                  depth: int | None = None, device: str = "auto",
                  progress: Progress | None = None) -> list[torch.Tensor]:
    """Expert trajectories for ``tm``: one ``[epochs + 1, P]`` float32 tensor per expert.

    Expert ``i`` is a ConvNet trained on the real data with plain SGD (``lr``, no momentum or
    weight decay, DSA per image); its flat parameters are kept at the start and after each
    epoch. With ``cache_dir``, each expert is saved as ``expert-<fingerprint>-<i>.pt``
    (atomically) and experts already there are loaded instead of trained; the fingerprint
    covers the data and every argument that changes the trajectory.
    """
    import torch

    from omnifer.artifacts import atomic_path, fingerprint
    from omnifer.distill.methods.checkpoint import data_fingerprint
    from omnifer.distill.networks import (build_convnet, channel_stats, check_data, flat_params,
                                          train_network)
    from omnifer.device import resolve_device

    x, y = check_data(images, labels, n_classes)
    dev = resolve_device(device)
    strategy = parse_strategy(augment)
    mean, std = channel_stats(x)
    config = {"data": data_fingerprint(x, y), "n_classes": n_classes, "epochs": epochs,
              "seed": seed, "lr": lr, "batch_size": batch_size, "augment": strategy,
              "width": width, "depth": depth}
    tag = fingerprint(config)
    xd, yd = x.to(dev), y.to(dev)
    experts = []
    for i in range(n_experts):
        path = Path(cache_dir, f"expert-{tag}-{i:03d}.pt") if cache_dir is not None else None
        if path is not None and path.exists():
            experts.append(torch.load(path, map_location="cpu", weights_only=True))
        else:
            net_seed, data_seed = np.random.SeedSequence([seed, i]).generate_state(2)
            net = build_convnet(x.shape[1], x.shape[2], n_classes, int(net_seed), width=width,
                                depth=depth, mean=mean, std=std, device=dev)
            trajectory = [flat_params(net).cpu()]
            train_network(net, xd, yd, epochs=epochs, lr=lr, batch_size=batch_size,
                          gen=torch.Generator().manual_seed(int(data_seed)), augment=strategy,
                          on_epoch=lambda _: trajectory.append(flat_params(net).cpu()))
            experts.append(torch.stack(trajectory))
            if path is not None:
                with atomic_path(path) as tmp:
                    torch.save(experts[-1], tmp)
        if progress is not None:
            progress(i + 1, n_experts, {"stage": "experts"})
    return experts
