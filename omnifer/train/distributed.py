"""Data-parallel training on ``torch.distributed``: N processes (ranks) train one model.

Processes are started by ``torchrun`` (``omnifer train --nproc-per-node N`` starts it for one
machine), which sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``. :func:`join` joins their
process group: NCCL on GPUs (rank ``LOCAL_RANK`` uses ``cuda:LOCAL_RANK``), Gloo on CPUs.

A run on N ranks computes what one process computes with the same global batch:

- every rank draws the same sample stream (same generator, same weighted or shuffled order,
  same augmentation parameters for the whole global batch) and runs its own contiguous part
  of each global batch (``batch_size / N`` rows) through the network;
- batch normalisation and the embedding's running statistics use the moments of the whole
  global batch (:class:`GroupBatchNorm` on CPUs, ``torch.nn.SyncBatchNorm`` on GPUs);
- the heads' outputs of all parts are gathered (:func:`gather_parts`), so every rank
  computes the loss of the whole global batch: masked means, CCC and the structural
  Sinkhorn term are the one-process values;
- ``DistributedDataParallel`` averages the gradients, which :func:`gather_parts` scales so
  that the average is the global batch's gradient.

What differs: dropout masks are drawn on each rank (same rate, other masks), and sums are
added in another order (float rounding). Rank 0 alone writes checkpoints, training state,
histories and the run record; every rank reads the same state file to resume, so a run can
resume on another number of ranks.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn



@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """The rank's own GPU when ``device`` is a GPU and several ranks share a machine."""
        if self.world > 1 and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def part(self, batch: int) -> slice:
        """This rank's rows of a global batch of ``batch`` rows."""
        size = batch // self.world
        return slice(self.rank * size, (self.rank + 1) * size)


    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_rows(self, fn: Callable[[np.ndarray], dict[str, np.ndarray]],
                    rows: np.ndarray) -> dict[str, np.ndarray]:
        """``fn(rows)`` with the rows split over the ranks and the parts joined in order."""
        if self.world == 1:
            return fn(rows)
        mine = fn(np.array_split(rows, self.world)[self.rank])
        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, mine)
        parts = [p for p in parts if p]  # a rank with no rows returns nothing
        return {k: np.concatenate([p[k] for p in parts]) for k in (parts[0] if parts else {})}

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` ready for data-parallel steps (itself with one rank): global batch
        statistics, gradients averaged over the ranks. Its weights stay shared with
        ``model``, which is what gets saved."""
        if self.world == 1:
            return model
        group_statistics(model, device)
        # the batches are channels-last, and so are the convolutions' gradients: DDP's
        # gradient buckets follow the parameters' layout, which must be the same
        model.to(memory_format=torch.channels_last)
        ddp = nn.parallel.DistributedDataParallel
        # the buffers (batch statistics) are equal on every rank; no need to send them
        quiet = ({"forward_sync_buffers": False}
                 if "forward_sync_buffers" in inspect.signature(ddp).parameters
                 else {"broadcast_buffers": False})
        return ddp(model, device_ids=[device.index] if device.type == "cuda" else None, **quiet)


def join(device: torch.device) -> Ranks:
    """The ranks of this process; joins torchrun's process group when ``WORLD_SIZE`` > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), local)


class _GatherParts(torch.autograd.Function):
    """Every rank's part of the batch, joined in rank order.

    Each rank computes the same loss from the joined batch, so the gradient of its own part
    is the same on every rank; scaled by the number of ranks, the ranks' average (what DDP
    takes) is the gradient of the one loss."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.world, ctx.n = dist.get_rank(), dist.get_world_size(), len(x)
        parts = [torch.empty_like(x) for _ in range(ctx.world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n] * ctx.world


def gather_parts(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model outputs of the whole global batch from each rank's part (as is with one)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return outputs
    keys = list(outputs)  # one exchange for all outputs: side by side as [n, sum of widths]
    flat = [outputs[k].reshape(len(outputs[k]), -1) for k in keys]
    joined = _GatherParts.apply(torch.cat(flat, dim=1))
    parts = joined.split([f.shape[1] for f in flat], dim=1)
    return {k: p.reshape(-1, *outputs[k].shape[1:]) for k, p in zip(keys, parts)}


def _channel_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance per channel of [N, C, ...], with the batch-norm kernel
    (about 3 times faster on CPUs than a strided ``var_mean``)."""
    return torch.batch_norm_update_stats(x, None, None, 0.0)


def global_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean and (biased) variance per channel (dim 1; dim 0 and dims after 1 are reduced)
    over every rank's rows, and the number of values behind them; no gradient. Each rank
    reduces its rows once; the ranks' moments are combined in float64."""
    with torch.no_grad():
        mean, var = _channel_moments(x)
        n = x.numel() // x.shape[1]
        m64 = mean.double()
        total = torch.cat([m64 * n, (var.double() + m64 * m64) * n, m64.new_tensor([float(n)])])
        dist.all_reduce(total)
        c, count = x.shape[1], total[-1]
        mean64 = total[:c] / count
        var64 = (total[c:2 * c] / count - mean64 * mean64).clamp_min(0.0)
    return mean64.to(x.dtype), var64.to(x.dtype), int(count.item())


class _GroupBatchNormFunction(torch.autograd.Function):
    """Batch normalisation with the global batch's moments, and its gradient: the per-channel
    sums of the backward pass are added over the ranks (one exchange each way)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        mean, var, count = global_moments(x)
        # the batch-norm kernel with the global moments standing in for running statistics
        y = nn.functional.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)
        invstd = torch.rsqrt(var + eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.eps = eps
        ctx.count = count
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var, count

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, *_: Any) -> tuple[Any, ...]:
        x, weight, mean, invstd = ctx.saved_tensors
        shape = (1, -1) + (1,) * (x.dim() - 2)
        # the kernel's per-channel sums of this rank's rows: sum(dy (x - mean) invstd), sum(dy)
        _, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            grad, x, weight, None, None, mean, invstd, True, ctx.eps, [False, True, True])
        sum_dy, sum_dy_xmu = grad_bias, grad_weight / invstd
        total = torch.cat([sum_dy, sum_dy_xmu])
        dist.all_reduce(total)
        c = x.shape[1]
        mean_dy, mean_dy_xmu = total[:c] / ctx.count, total[c:] / ctx.count
        a = weight * invstd
        k = a * invstd * invstd * mean_dy_xmu
        grad_x = torch.addcmul((k * mean - a * mean_dy).view(shape), grad, a.view(shape))
        grad_x.addcmul_(x, k.view(shape), value=-1.0)
        return grad_x, grad_weight, grad_bias, None


class GroupBatchNorm(nn.BatchNorm2d):
    """Batch normalisation over the whole global batch on CPUs, where
    ``torch.nn.SyncBatchNorm`` does not run. Any input rank (N, C, ...) is accepted."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return nn.functional.batch_norm(x, self.running_mean, self.running_var,
                                            self.weight, self.bias, False, 0.0, self.eps)
        weight = self.weight if self.affine else x.new_ones(x.shape[1])
        bias = self.bias if self.affine else x.new_zeros(x.shape[1])
        y, mean, var, n = _GroupBatchNormFunction.apply(x, weight, bias, self.eps)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                     else self.momentum)
                self.running_mean.lerp_(mean, m)
                self.running_var.lerp_(var * n / max(n - 1, 1), m)
        return y


def _embedding_moments(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, var, _ = global_moments(features)
    return mean, var


def group_statistics(model: nn.Module, device: torch.device) -> None:
    """Make ``model``'s batch statistics those of the global batch, in place: batch norms
    become synchronised ones and the embedding's running moments are taken over all ranks."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) \
                    and not isinstance(child, GroupBatchNorm):
                setattr(parent, name, _synchronised(child, device))
        if hasattr(parent, "batch_moments"):
            parent.batch_moments = _embedding_moments


def _synchronised(bn: nn.Module, device: torch.device) -> nn.Module:
    cls = nn.SyncBatchNorm if device.type == "cuda" else GroupBatchNorm
    new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    new.load_state_dict(bn.state_dict())
    return new.to(device)


__all__ = ["GroupBatchNorm", "Ranks", "gather_parts", "global_moments", "group_statistics",
           "join"]
