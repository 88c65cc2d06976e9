"""Structural distillation: the student learns how the teacher arranges a batch.

Each sample of a batch of B becomes a row of its cosine similarities to k anchor samples of
that batch (B x k rows, in the teacher's space and in the student's, so embedding sizes may
differ). The two clouds of rows are compared with a Sinkhorn divergence (entropic optimal
transport, log-domain, uniform weights, squared-Euclidean cost), which is zero for equal clouds.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from omnifer.errors import OmniferError
from omnifer.train.config import ANCHOR_RULES


def check_options(anchors: int = 2, rule: str = "random", epsilon: float = 1.0,
                  iterations: int = 1) -> None:
    """One-line errors for structural options out of range (the defaults always pass)."""
    if int(anchors) < 2:
        raise OmniferError(f"structural anchors is {anchors}; use at least 2")
    if rule not in ANCHOR_RULES:
        raise OmniferError(f"unknown anchor rule {rule!r}; use one of {', '.join(ANCHOR_RULES)}")
    if not float(epsilon) > 0:
        raise OmniferError(f"Sinkhorn epsilon is {epsilon}; use a value > 0")
    if int(iterations) < 1:
        raise OmniferError(f"Sinkhorn iterations is {iterations}; use at least 1")


def similarity_rows(embeddings: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every row of [B, D] ``embeddings`` to the ``anchors`` rows: [B, k]."""
    z = F.normalize(embeddings, dim=-1)
    return z @ z[anchors.to(z.device)].T


def select_anchors(teacher_embeddings: torch.Tensor, k: int, rule: str = "random") -> torch.Tensor:
    """Indices of k anchor rows of a [B, D] or [B, M, D] teacher batch (all B rows if k >= B).

    ``random``: the first k rows (batches are random draws, so a random subset, reproducibly).
    ``farthest``: farthest-point sampling from row 0 on the cosine distance (an ensemble's
    distance is the mean of its members')."""
    check_options(k, rule)
    t = teacher_embeddings.detach()
    t, b = (t[:, None] if t.dim() == 2 else t), t.shape[0]
    if k >= b:
        return torch.arange(b, device=t.device)
    if rule == "random":
        return torch.arange(int(k), device=t.device)
    z = F.normalize(t.float(), dim=-1).transpose(0, 1)  # [M, B, D]
    dist = 1.0 - (z @ z.transpose(1, 2)).mean(0)  # [B, B]
    chosen, nearest = [0], dist[0].clone()
    nearest[0] = -math.inf
    for _ in range(int(k) - 1):
        i = int(nearest.argmax())
        chosen.append(i)
        nearest = torch.minimum(nearest, dist[i])
        nearest[chosen] = -math.inf  # a chosen row is never picked again, even if duplicated
    return torch.tensor(chosen, device=t.device)


def sinkhorn_cost(x: torch.Tensor, y: torch.Tensor, epsilon: float, iterations: int
                  ) -> torch.Tensor:
    """Transport cost ``<P, C>`` of the entropic plan P between [n, k] ``x`` and [m, k] ``y``
    (uniform weights, ``C`` the squared Euclidean distance, expanded as in ``ot.dist``;
    ``epsilon`` in the units of C, no rescaling), as ``ot.sinkhorn2(a, b, C, reg=epsilon)``;
    a fixed number of log-domain iterations, differentiated through."""
    check_options(epsilon=epsilon, iterations=iterations)
    dtype = torch.promote_types(x.dtype, y.dtype)
    x, y = x.to(dtype), y.to(device=x.device, dtype=dtype)
    cost = (x.pow(2).sum(1)[:, None] + y.pow(2).sum(1)[None, :] - 2.0 * x @ y.T).clamp_min(0)
    n, m = cost.shape
    log_a, log_b, kernel = -math.log(n), -math.log(m), -cost / epsilon
    # log P = u_i + v_j - C_ij / eps; each half-step makes one marginal exact (v: the last)
    v = torch.full((m,), log_b, dtype=dtype, device=x.device)
    for _ in range(int(iterations)):
        u = log_a - torch.logsumexp(kernel + v[None, :], dim=1)
        v = log_b - torch.logsumexp(kernel + u[:, None], dim=0)
    plan = torch.exp(kernel + u[:, None] + v[None, :])
    return (plan * cost).sum()


def sinkhorn_divergence(x: torch.Tensor, y: torch.Tensor, epsilon: float, iterations: int
                        ) -> torch.Tensor:
    """``S(x, y) = OT(x, y) - OT(x, x) / 2 - OT(y, y) / 2`` with :func:`sinkhorn_cost`."""
    return (sinkhorn_cost(x, y, epsilon, iterations)
            - 0.5 * sinkhorn_cost(x, x, epsilon, iterations)
            - 0.5 * sinkhorn_cost(y, y, epsilon, iterations))


def structural_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor, *, anchors: int = 16,
                    rule: str = "random", epsilon: float = 0.05, iterations: int = 50
                    ) -> torch.Tensor:
    """Sinkhorn divergence between the student's and the teacher's similarity rows.

    ``student_emb`` [B, Ds]; ``teacher_emb`` [B, Dt] or [B, M, Dt] (an ensemble: the teacher
    rows are the mean of the members' rows). Anchors are picked on the teacher; the teacher
    side carries no gradient."""
    check_options(anchors, rule, epsilon, iterations)
    if student_emb.dim() != 2 or teacher_emb.dim() not in (2, 3):
        raise OmniferError(
            f"structural loss got student embeddings {tuple(student_emb.shape)} and teacher "
            f"{tuple(teacher_emb.shape)}; pass [B, D] and [B, D] or [B, members, D]")
    b = student_emb.shape[0]
    if teacher_emb.shape[0] != b:
        raise OmniferError(
            f"structural loss: the student batch has {b} rows, the teacher's "
            f"{teacher_emb.shape[0]}; pass the teacher embeddings of the same batch rows")
    if b < 2:
        raise OmniferError(f"structural loss needs a batch of at least 2 samples, got {b}; "
                           "use a larger batch size")
    teacher = teacher_emb.detach().to(student_emb.device)
    teacher = teacher[:, None] if teacher.dim() == 2 else teacher
    idx = select_anchors(teacher, anchors, rule)
    rows_t = torch.stack([similarity_rows(teacher[:, j], idx) for j in range(teacher.shape[1])])
    rows_s = similarity_rows(student_emb, idx)
    return sinkhorn_divergence(rows_s, rows_t.mean(0), epsilon, iterations)


__all__ = ["check_options", "select_anchors", "similarity_rows",
           "sinkhorn_cost", "sinkhorn_divergence", "structural_loss"]
