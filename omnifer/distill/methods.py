"""Dataset distillation: learn a few synthetic images per class from real ``[N, C, H, W]`` arrays.

Methods (registry :data:`METHODS`, entry point :func:`distill`):

``dm``  distribution matching: each iteration draws a fresh random ConvNet and matches the
        per-class mean embeddings of augmented real and synthetic batches (siamese DSA).
``gm``  gradient matching: per class, the gradients of the classification loss w.r.t. the
        weights on real and synthetic batches are matched (layer-wise cosine distance); between
        image updates the network trains on the synthetic set (outer/inner loops).
``tm``  trajectory matching: a student starts from an expert checkpoint (experts are networks
        trained on the real data, see :func:`train_experts`), takes ``syn_steps`` SGD steps on the
        synthetic set and should land near the expert ``expert_epochs`` later. The gradient
        w.r.t. images, soft labels and the student learning rate is exact and built one step at
        a time (:func:`trajectory_gradient`), so no step's graph outlives its step.

Synthetic images are learned with Adam in pixel units and kept in ``[0, 1]`` after each update.
All randomness comes from one ``torch.Generator`` seeded with ``seed``; its state is part of
the checkpoint, so a resumed run ends with the same result as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from omnifer.artifacts import atomic_path, fingerprint
from omnifer.distill.augment import DEFAULT_STRATEGY, draw_seed, dsa, parse_strategy
from omnifer.distill.networks import (build_convnet, channel_stats, check_data, flat_params,
                                      functional_forward, train_network)
from omnifer.errors import ConfigMismatchError, OmniferError

log = logging.getLogger(__name__)

Progress = Callable[[int, int, dict], None]


@dataclass(frozen=True)
class Distilled:
    """A distilled set: ``images`` float32 ``[K*ipc, C, H, W]`` in [0, 1], class by class."""

    images: np.ndarray
    labels: np.ndarray              # int64 [K*ipc]
    soft_labels: np.ndarray | None  # float32 [K*ipc, K] (rows sum to 1) when learned
    method: str
    iterations: int
    seconds: float                  # distillation time (summed over resumed runs)
    history: tuple[float, ...]      # loss per iteration
    mean: tuple[float, ...]         # per-channel normalisation of the real data
    std: tuple[float, ...]


# ---------------------------------------------------------------- method options

@dataclass(frozen=True)
class DMOptions:
    batch_real: int = 128           # real images per class per iteration


@dataclass(frozen=True)
class GMOptions:
    batch_real: int = 128           # real images per class per matching step
    outer_loop: int | None = None   # image updates per network; None: by ipc (DC's table)
    inner_loop: int | None = None   # epochs on the synthetic set between updates; None: by ipc
    net_lr: float = 0.01
    lr_labels: float = 0.01


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


def _gm_loops(ipc: int) -> tuple[int, int]:
    """(outer, inner) loops by images per class, after the DC paper's settings."""
    for limit, loops in ((1, (1, 1)), (10, (10, 50)), (20, (20, 25)), (30, (30, 20)),
                         (40, (40, 15))):
        if ipc <= limit:
            return loops
    return 50, 10


# ---------------------------------------------------------------- shared state of a run

class _Run:
    """What every method reads and updates: real data per class, synthetic set, randomness."""

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


# ---------------------------------------------------------------- dm

class DistributionMatching:
    """Match per-class mean embeddings of a fresh random ConvNet each iteration."""

    options = DMOptions
    iterations, lr_images, learns_labels = 1000, 0.05, False

    def __init__(self, run: _Run, opts: DMOptions, **_: Any):
        self.opts = opts

    def step(self, run: _Run) -> float:
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


# ---------------------------------------------------------------- gm

def gradient_distance(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    """Layer-wise distance: sum over output units of (1 - cosine) of the weight gradients.

    1-D parameters (biases, norm scales) are left out, as in the gradient-matching paper.
    """
    total = a[0].new_zeros(())
    for ga, gb in zip(a, b):
        if ga.dim() < 2:
            continue
        ga, gb = ga.reshape(ga.shape[0], -1), gb.reshape(gb.shape[0], -1)
        total = total + (1 - F.cosine_similarity(ga, gb, dim=1, eps=1e-6)).sum()
    return total


class GradientMatching:
    """Match per-class weight gradients on real and synthetic batches; train the net between."""

    options = GMOptions
    iterations, lr_images, learns_labels = 200, 0.01, True

    def __init__(self, run: _Run, opts: GMOptions, **_: Any):
        self.opts = opts
        outer, inner = _gm_loops(run.ipc)
        self.outer = opts.outer_loop or outer
        self.inner = inner if opts.inner_loop is None else opts.inner_loop

    def step(self, run: _Run) -> float:
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


# ---------------------------------------------------------------- tm

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


class TrajectoryMatching:
    """Match expert trajectories from random start epochs (exact, step-by-step gradients)."""

    options = TMOptions
    iterations, lr_images, learns_labels = 500, 0.01, True

    def __init__(self, run: _Run, opts: TMOptions, *, experts: list[torch.Tensor] | None,
                 real: tuple[torch.Tensor, torch.Tensor], seed: int, progress: Progress | None,
                 augment: tuple[str, ...], **_: Any):
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

    def param_groups(self, run: _Run) -> dict[str, float]:
        return {"log_lr": self.opts.lr_lr}

    def step(self, run: _Run) -> float:
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


#: Distillation methods by name.
METHODS: dict[str, type] = {"dm": DistributionMatching, "gm": GradientMatching,
                            "tm": TrajectoryMatching}


def get_method(name: str) -> type:
    if name not in METHODS:
        raise OmniferError(
            f"unknown distillation method {name!r}; choose one of: {', '.join(METHODS)}"
        )
    return METHODS[name]


# ---------------------------------------------------------------- experts

def _data_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(str(tuple(x.shape)).encode())
    h.update(x.numpy().tobytes())
    h.update(y.numpy().tobytes())
    return h.hexdigest()


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
    from omnifer.models import resolve_device

    x, y = check_data(images, labels, n_classes)
    dev = resolve_device(device)
    strategy = parse_strategy(augment)
    mean, std = channel_stats(x)
    config = {"data": _data_fingerprint(x, y), "n_classes": n_classes, "epochs": epochs,
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


# ---------------------------------------------------------------- the entry point

def _options(spec: type, options: dict[str, Any] | None) -> Any:
    fields = {f.name for f in dataclasses.fields(spec.options)}
    bad = sorted(set(options or {}) - fields)
    if bad:
        raise OmniferError(
            f"unknown option {bad[0]!r} for this method; valid options: {', '.join(sorted(fields))}"
        )
    return spec.options(**(options or {}))


def distill(images: object, labels: object, *, n_classes: int, method: str = "dm",
            images_per_class: int = 10, iterations: int | None = None,
            lr_images: float | None = None, soft_labels: bool = False, init: str = "real",
            augment: str | Iterable[str] | None = DEFAULT_STRATEGY, width: int = 128,
            depth: int | None = None, options: dict[str, Any] | None = None, seed: int = 0,
            device: str = "auto", checkpoint: str | os.PathLike | None = None,
            checkpoint_every: int = 100, progress: Progress | None = None,
            experts: list[torch.Tensor] | None = None) -> Distilled:
    """Distil ``images`` ``[N, C, H, W]`` in [0, 1] with ``labels`` ``[N]`` into
    ``images_per_class`` synthetic images per class.

    ``iterations`` and ``lr_images`` default to the method's own (dm 1000 / 0.05, gm 200 / 0.01,
    tm 500 / 0.01); ``options`` holds method-specific knobs (:class:`DMOptions`,
    :class:`GMOptions`, :class:`TMOptions`). ``soft_labels`` learns label logits with the images
    (gm, tm). ``init`` is ``real`` (random real images of each class) or ``noise``. ``augment``
    is the DSA strategy (drop ``flip`` for data with a handedness, such as digits).

    With ``checkpoint`` (a file path), the state is saved atomically every ``checkpoint_every``
    iterations and at the end; calling again with the same path and arguments resumes from it
    (``iterations`` may grow). ``progress(done, total, info)`` is called after each iteration.
    """
    from omnifer.models import resolve_device

    spec = get_method(method)
    opts = _options(spec, options)
    x, y = check_data(images, labels, n_classes, images_per_class)
    if init not in ("real", "noise"):
        raise OmniferError(f"unknown init {init!r}; choose 'real' or 'noise'")
    if soft_labels and not spec.learns_labels:
        raise OmniferError(
            f"method {method!r} does not learn labels; use soft_labels=False or method 'gm' or 'tm'"
        )
    iterations = spec.iterations if iterations is None else int(iterations)
    lr_images = spec.lr_images if lr_images is None else float(lr_images)
    strategy = parse_strategy(augment)
    dev = resolve_device(device)
    mean, std = channel_stats(x)
    ipc = int(images_per_class)

    gen = torch.Generator().manual_seed(int(seed))
    by_class = [torch.nonzero(y == c).flatten() for c in range(n_classes)]
    if init == "real":
        picks = torch.cat([i[torch.randperm(i.numel(), generator=gen)[:ipc]] for i in by_class])
        syn = x[picks].clone()
    else:
        syn = torch.rand((n_classes * ipc, *x.shape[1:]), generator=gen)
    syn = syn.to(dev).requires_grad_(True)
    label_logits = None
    if soft_labels:
        scale = math.log(9.0 * max(n_classes - 1, 1))  # softmax gives 0.9 to the own class
        label_logits = (F.one_hot(torch.arange(n_classes).repeat_interleave(ipc), n_classes)
                        .float() * scale).to(dev).requires_grad_(True)
    net_args = {"channels": x.shape[1], "size": x.shape[2], "n_classes": n_classes,
                "width": width, "depth": depth, "mean": mean, "std": std}
    run = _Run([x[i].to(dev) for i in by_class], syn, label_logits, ipc=ipc, strategy=strategy,
               gen=gen, net_args=net_args, device=dev)
    impl = spec(run, opts, experts=experts, real=(x, y), seed=seed, progress=progress,
                augment=strategy)
    lrs = {"images": lr_images, "label_logits": getattr(opts, "lr_labels", lr_images)}
    if hasattr(impl, "param_groups"):
        lrs.update(impl.param_groups(run))
    run.optimizer = torch.optim.Adam(
        [{"params": [p], "lr": lrs[name]} for name, p in run.learnables.items()])

    config = {"method": method, "images_per_class": ipc, "n_classes": n_classes,
              "lr_images": lr_images, "soft_labels": soft_labels, "init": init,
              "augment": strategy, "width": width, "depth": depth,
              "options": dataclasses.asdict(opts), "seed": seed,
              "data": _data_fingerprint(x, y),
              "experts": (_experts_fingerprint(impl.experts)
                          if experts is not None and hasattr(impl, "experts") else None)}
    start, history, seconds = 0, [], 0.0
    if checkpoint is not None and Path(checkpoint).exists():
        start, history, seconds = _load_checkpoint(checkpoint, fingerprint(config), run, iterations)

    t0 = time.perf_counter()
    for it in range(start, iterations):
        history.append(impl.step(run))
        done = it + 1
        if checkpoint is not None and (done % checkpoint_every == 0 or done == iterations):
            _save_checkpoint(checkpoint, fingerprint(config), run, done, history,
                             seconds + time.perf_counter() - t0)
        if progress is not None:
            progress(done, iterations, {"loss": history[-1]})
        if done % max(1, iterations // 10) == 0:
            log.info("%s iteration %d/%d loss %.4g", method, done, iterations, history[-1])
    seconds += time.perf_counter() - t0

    soft = None
    if label_logits is not None:
        soft = label_logits.detach().softmax(1).cpu().numpy().astype(np.float32)
    return Distilled(images=syn.detach().cpu().numpy().astype(np.float32),
                     labels=run.labels.cpu().numpy().astype(np.int64), soft_labels=soft,
                     method=method, iterations=iterations, seconds=seconds,
                     history=tuple(history), mean=tuple(mean), std=tuple(std))


def _experts_fingerprint(experts: list[torch.Tensor]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for e in experts:
        h.update(e.contiguous().numpy().tobytes())
    return h.hexdigest()


def _save_checkpoint(path: str | os.PathLike, tag: str, run: _Run, iteration: int,
                     history: list[float], seconds: float) -> None:
    state = {"fingerprint": tag, "iteration": iteration, "history": list(history),
             "seconds": seconds, "generator": run.gen.get_state(),
             "learnables": {k: v.detach().cpu() for k, v in run.learnables.items()},
             "optimizer": run.optimizer.state_dict()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: str | os.PathLike, tag: str, run: _Run,
                     iterations: int) -> tuple[int, list[float], float]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
        raise OmniferError(
            f"checkpoint {path} is unreadable ({type(exc).__name__}); delete it to start over"
        ) from None
    if state.get("fingerprint") != tag:
        raise ConfigMismatchError(
            f"checkpoint {path} was made with other arguments or data (config "
            f"{state.get('fingerprint')}, now {tag}); pass the original arguments or a new "
            "checkpoint path"
        )
    if state["iteration"] > iterations:
        raise OmniferError(
            f"checkpoint {path} is at iteration {state['iteration']}, beyond "
            f"iterations={iterations}; raise iterations or use a new checkpoint path"
        )
    with torch.no_grad():
        for name, value in state["learnables"].items():
            run.learnables[name].copy_(value)
    run.optimizer.load_state_dict(state["optimizer"])
    run.gen.set_state(state["generator"])
    log.info("resumed from %s at iteration %d", path, state["iteration"])
    return int(state["iteration"]), list(state["history"]), float(state["seconds"])
