"""Multitask losses with masked partial labels, and teacher-student distillation.

A batch is a dict of tensors (the loop's ``LABEL_KEYS``): ``expression`` long [B] (0
where missing), ``expression_mask`` bool [B], ``va`` float [B, 2], ``va_mask`` bool [B],
``au`` float [B, A] (0/1), ``au_mask`` bool [B, A], ``weight`` float [B] (per-sample weight,
e.g. a mined sample's confidence).

Model outputs are a dict: ``expression`` logits [B, C], ``va`` [B, 2] in [-1, 1],
``va_logits`` [B, 2, n] for a binned VA head (bin centres from :func:`bin_centres`),
``au`` logits [B, A], ``joint`` logits [B, 4C] (expression x VA quadrant). A head that is
absent from the outputs has no loss.

Ground-truth losses are masked: a labeled sample's loss is multiplied by its weight and the
sum is divided by the *number* of labeled samples (``max(sum(mask), 1)``). A task with no
labeled sample in the batch therefore adds exactly zero, with exactly zero gradient. For CCC,
which needs two samples to have a variance, fewer than two labeled samples give
``pred.sum() * 0.0``: a zero still attached to the graph, so the head gets a gradient of
zeros rather than none.

Distillation terms use the teacher's soft targets (:func:`soft_targets`) on *every* sample:
their point is to supply the labels a sample lacks. The structural term
(:mod:`omnifer.train.structural`) distils how the teacher's embeddings arrange the batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from omnifer.errors import OmniferError
from omnifer.train.structural import check_options, structural_loss

VA_LOSSES: tuple[str, ...] = ("ccc", "mse", "ccc+mse")


# ---------------------------------------------------------------- VA bins


def bin_centres(n_bins: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Centres of ``n_bins`` equal bins over [-1, 1]: ``-1 + (2k + 1) / n``."""
    if int(n_bins) < 1:
        raise OmniferError(f"number of VA bins is {n_bins}; use 1 or more")
    n = int(n_bins)
    return -1.0 + (2.0 * torch.arange(n, dtype=torch.float32, device=device) + 1.0) / n


def va_bin_targets(values: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Index of the bin holding each value (long, same shape): -1 is bin 0, 1 is bin n - 1."""
    idx = torch.floor((values.float() + 1.0) / 2.0 * n_bins).long()
    return idx.clamp(0, int(n_bins) - 1)


def bin_expectation(logits: torch.Tensor) -> torch.Tensor:
    """Softmax expectation over the bin centres: [..., n] logits -> [...] values."""
    centres = bin_centres(logits.shape[-1], device=logits.device)
    return torch.softmax(logits.float(), dim=-1) @ centres


def quadrant(va: torch.Tensor) -> torch.Tensor:
    """VA quadrant of [B, 2] values: ``2 * (valence >= 0) + (arousal >= 0)`` (long [B])."""
    return 2 * (va[:, 0] >= 0).long() + (va[:, 1] >= 0).long()


# ---------------------------------------------------------------- ground-truth losses


def _weights(weight: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if weight is None:
        return torch.ones(like.shape[0], dtype=torch.float32, device=like.device)
    return weight.float()


def _masked_mean(
    per_sample: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """``sum(w * m * l) / max(sum(m), 1)``; ``weight`` broadcasts over trailing dims of ``mask``."""
    m = mask.float()
    w = weight.float().reshape(weight.shape + (1,) * (m.dim() - weight.dim()))
    return (per_sample.float() * w * m).sum() / m.sum().clamp_min(1.0)


def masked_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of [B, C] logits on the samples where ``mask`` [B] is set."""
    mask = mask.bool()
    # Missing targets are replaced by 0 so that a garbage value never indexes.
    safe = torch.where(mask, target.long(), torch.zeros_like(target.long()))
    per_sample = F.cross_entropy(logits.float(), safe, reduction="none")
    return _masked_mean(per_sample, mask, _weights(weight, logits))


def masked_bce(
    logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
    weight: torch.Tensor | None = None, pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """BCE-with-logits of [B, A] logits, normalised by the labeled (sample, AU) pairs.

    ``pos_weight`` [A] multiplies each AU's positive term (see :func:`au_pos_weight`).
    """
    if pos_weight is not None:
        pos_weight = pos_weight.to(device=logits.device, dtype=torch.float32)
    per_pair = F.binary_cross_entropy_with_logits(
        logits.float(), target.float(), reduction="none", pos_weight=pos_weight
    )
    return _masked_mean(per_pair, mask, _weights(weight, logits))


def ccc(
    pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
    *, eps: float = 1e-8,
) -> torch.Tensor:
    """Weighted concordance correlation coefficient of two [N] vectors.

    Moments are population moments under the normalised weights, so integer weights give the
    CCC of the samples repeated that many times. The denominator is clamped at ``eps``.
    """
    x, y = pred.float(), target.float()
    w = torch.ones_like(x) if weight is None else weight.float()
    w = w / w.sum().clamp_min(eps)
    mx, my = (w * x).sum(), (w * y).sum()
    vx = (w * (x - mx) ** 2).sum()
    vy = (w * (y - my) ** 2).sum()
    cov = (w * (x - mx) * (y - my)).sum()
    return 2.0 * cov / (vx + vy + (mx - my) ** 2).clamp_min(eps)


def ccc_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over valence and arousal of ``1 - CCC`` on the labeled samples (weights w * mask).

    With fewer than two labeled samples of positive weight the CCC is undefined: the result is
    ``pred.sum() * 0.0`` (zero, attached, zero gradient).
    """
    w = _weights(weight, pred) * mask.float()
    if int((w > 0).sum()) < 2:
        return pred.sum() * 0.0
    return torch.stack([1.0 - ccc(pred[:, d], target[:, d], w) for d in range(2)]).mean()


def masked_mse(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Squared error of [B, 2] values, averaged over the two dims, on the labeled samples."""
    per_sample = ((pred.float() - target.float()) ** 2).mean(dim=1)
    return _masked_mean(per_sample, mask, _weights(weight, pred))


def va_prediction(outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The model's [B, 2] VA values: the bin expectation for a binned head, else ``va``."""
    if "va_logits" in outputs:
        return bin_expectation(outputs["va_logits"])
    return outputs["va"]


def va_gt_loss(
    outputs: Mapping[str, torch.Tensor], target: torch.Tensor, mask: torch.Tensor,
    weight: torch.Tensor | None = None, *, va_loss: str = "ccc",
) -> torch.Tensor:
    """VA loss. Binned head: masked CE on the bins (mean of both dims) + CCC loss on the
    expectation. Regression head: ``va_loss`` = ``ccc``, ``mse`` or ``ccc+mse``."""
    if "va_logits" in outputs:
        logits = outputs["va_logits"]
        bins = va_bin_targets(target, logits.shape[-1])
        ce = torch.stack(
            [masked_cross_entropy(logits[:, d], bins[:, d], mask, weight) for d in range(2)]
        ).mean()
        return ce + ccc_loss(bin_expectation(logits), target, mask, weight)
    pred = outputs["va"]
    if va_loss not in VA_LOSSES:
        raise OmniferError(f"unknown va_loss {va_loss!r}; use one of {', '.join(VA_LOSSES)}")
    loss = pred.sum() * 0.0
    if "ccc" in va_loss:
        loss = loss + ccc_loss(pred, target, mask, weight)
    if "mse" in va_loss:
        loss = loss + masked_mse(pred, target, mask, weight)
    return loss


def joint_loss(
    logits: torch.Tensor, batch: Mapping[str, torch.Tensor],
) -> torch.Tensor:
    """Masked CE of [B, 4C] joint logits against ``expression * 4 + quadrant(va)`` on the
    samples that carry both an expression and a VA label."""
    if logits.shape[-1] % 4:
        raise OmniferError(
            f"joint logits have {logits.shape[-1]} columns; expected 4 x number of expressions"
        )
    mask = _get(batch, "expression_mask") & _get(batch, "va_mask")
    target = _get(batch, "expression").long() * 4 + quadrant(_get(batch, "va"))
    return masked_cross_entropy(logits, target, mask, batch.get("weight"))


def au_pos_weight(
    au: np.ndarray | torch.Tensor, au_mask: np.ndarray | torch.Tensor, max_weight: float = 10.0
) -> torch.Tensor:
    """Per-AU positive weight for :func:`masked_bce`: negatives / positives among the labeled
    rows, clipped to [1 / max_weight, max_weight]; 1.0 for an AU with no labeled positive.

    ``au`` and ``au_mask`` are [N, A] arrays or tensors (e.g. from ``LabeledSet.arrays()``).
    """
    if not float(max_weight) >= 1.0:
        raise OmniferError(f"au_pos_weight max_weight is {max_weight}; use a value >= 1")
    au = torch.as_tensor(au).float()
    mask = torch.as_tensor(au_mask).bool()
    positive = ((au >= 0.5) & mask).sum(0).float()
    negative = ((au < 0.5) & mask).sum(0).float()
    ratio = torch.where(positive > 0, negative / positive.clamp_min(1.0), torch.ones_like(positive))
    return ratio.clamp(1.0 / float(max_weight), float(max_weight))


# ---------------------------------------------------------------- distillation


def kd_kl(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """``T^2 * sum_i(w_i * KL(teacher_i || softmax(student_i / T))) / B``.

    Works for [B, C] logits and for [B, 2, n] VA bins (KL per dim, averaged over the dims).
    """
    log_q = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    p = teacher_probs.float()
    kl = (torch.xlogy(p, p) - p * log_q).sum(dim=-1)
    if kl.dim() > 1:
        kl = kl.flatten(1).mean(dim=1)
    w = _weights(weight, student_logits)
    return temperature**2 * (w * kl).sum() / kl.shape[0]


def kd_bce(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """BCE-with-logits against the teacher's AU probabilities, averaged over samples and AUs."""
    per_pair = F.binary_cross_entropy_with_logits(
        student_logits.float(), teacher_probs.float(), reduction="none"
    )
    w = _weights(weight, student_logits)
    return (per_pair * w[:, None]).sum() / max(per_pair.numel(), 1)


def kd_mse(
    student_va: torch.Tensor, teacher_va: torch.Tensor, weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Squared error to the teacher's VA values, averaged over the two dims, ``sum(w * e) / B``."""
    per_sample = ((student_va.float() - teacher_va.float()) ** 2).mean(dim=1)
    w = _weights(weight, student_va)
    return (w * per_sample).sum() / per_sample.shape[0]


def _mean_of(tensors: list[torch.Tensor], name: str) -> torch.Tensor:
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise OmniferError(
            f"ensemble members disagree on the shape of {name!r}: {sorted(shapes)}; "
            "ensemble models with the same heads"
        )
    return torch.stack([t.float() for t in tensors]).mean(dim=0)


def soft_targets(
    outputs: Sequence[Mapping[str, torch.Tensor]], temperature: float, *, embeddings: bool = False,
) -> dict[str, torch.Tensor]:
    """Teacher soft targets, averaged over an ensemble (mean of the members' probabilities).

    Keys, for the heads every member has: ``expression`` softmax(logits / T) [B, C];
    ``va_bins`` softmax(va_logits / T) [B, 2, n] (binned members); ``va`` mean of the VA values
    [B, 2] (every member has them; a regression student distils from these); ``au``
    sigmoid(logits) [B, A]; with ``embeddings``, ``embedding``: the members' embeddings
    stacked [B, M, D] (not averaged: each member has its own space). Computed without gradient.
    """
    members = list(outputs)
    if not members:
        raise OmniferError("soft_targets() got no teacher outputs; pass at least one model's")
    if not float(temperature) > 0:
        raise OmniferError(f"distillation temperature is {temperature}; use a value > 0")

    def common(key: str) -> bool:
        return all(key in m for m in members)

    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        if common("expression"):
            out["expression"] = _mean_of(
                [torch.softmax(m["expression"].float() / temperature, -1) for m in members],
                "expression",
            )
        if common("va_logits"):
            out["va_bins"] = _mean_of(
                [torch.softmax(m["va_logits"].float() / temperature, -1) for m in members],
                "va_logits",
            )
        if all("va" in m or "va_logits" in m for m in members):
            out["va"] = _mean_of([va_prediction(m).float() for m in members], "va")
        if common("au"):
            out["au"] = _mean_of([torch.sigmoid(m["au"].float()) for m in members], "au")
        if embeddings:
            if not common("embedding"):
                raise OmniferError("a teacher's outputs have no 'embedding'; structural "
                                   "distillation needs teachers that return their embeddings")
            emb = [m["embedding"].float() for m in members]
            _mean_of(emb, "embedding")  # one line if the members' shapes differ
            out["embedding"] = torch.stack(emb, dim=1)
    return out


# ---------------------------------------------------------------- the multitask loss


@dataclass(frozen=True)
class LossConfig:
    """Task weights, ground truth vs distillation mix, distillation temperature, VA loss;
    ``output_kd``: whether the soft-label terms count; ``structural``: weight of the structural
    term (0: off), with its ``anchors``, ``anchor_rule`` and Sinkhorn ``epsilon``/``iterations``."""

    expression: float = 1.0
    va: float = 1.0
    au: float = 1.0
    joint: float = 0.5
    gt: float = 0.6
    kd: float = 0.4
    temperature: float = 2.0
    va_loss: str = "ccc"
    output_kd: bool = True
    structural: float = 0.0
    anchors: int = 16
    anchor_rule: str = "random"
    epsilon: float = 0.05
    iterations: int = 50

    def __post_init__(self) -> None:
        check_options(self.anchors, self.anchor_rule, self.epsilon, self.iterations)
        for name in ("expression", "va", "au", "joint", "gt", "kd", "structural"):
            value = getattr(self, name)
            if not float(value) >= 0:
                raise OmniferError(f"loss weight {name}={value} is negative; use a value >= 0")
        if not float(self.temperature) > 0:
            raise OmniferError(
                f"distillation temperature is {self.temperature}; use a value > 0"
            )
        if self.va_loss not in VA_LOSSES:
            raise OmniferError(
                f"unknown va_loss {self.va_loss!r}; use one of {', '.join(VA_LOSSES)}"
            )


def _get(batch: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in batch:
        raise OmniferError(
            f"batch lacks {key!r} (has {sorted(batch)}); build batches with the keys of "
            "omnifer.train.loop.LABEL_KEYS"
        )
    return batch[key]


def multitask_loss(
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    *,
    config: LossConfig = LossConfig(),
    au_pos_weight: torch.Tensor | None = None,
    teacher: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Scalar losses by name, plus ``total``.

    ``expression``, ``va``, ``au``, ``joint``: ground-truth losses for the heads in
    ``outputs``. With ``teacher`` (from :func:`soft_targets`): ``kd_expression``, ``kd_va``,
    ``kd_au`` for the tasks both have (unless ``config.output_kd`` is off), and with
    ``config.structural > 0`` ``kd_structural`` (:func:`structural_loss` of the student's
    ``embedding`` and the teacher's, batch-level: sample weights do not apply). ``total`` is
    ``sum(task_weight * loss)`` without a teacher, and ``gt * that + kd * sum(task_weight *
    kd_loss) + structural * kd_structural`` with one.
    """
    weight = batch.get("weight")
    has_va = "va" in outputs or "va_logits" in outputs
    losses: dict[str, torch.Tensor] = {}
    if "expression" in outputs:
        losses["expression"] = masked_cross_entropy(
            outputs["expression"], _get(batch, "expression"), _get(batch, "expression_mask"),
            weight,
        )
    if has_va:
        losses["va"] = va_gt_loss(
            outputs, _get(batch, "va"), _get(batch, "va_mask"), weight, va_loss=config.va_loss
        )
    if "au" in outputs:
        losses["au"] = masked_bce(
            outputs["au"], _get(batch, "au"), _get(batch, "au_mask"), weight, au_pos_weight
        )
    if "joint" in outputs:
        losses["joint"] = joint_loss(outputs["joint"], batch)
    if not losses:
        raise OmniferError(
            f"model outputs have no task head (keys {sorted(outputs)}); expected one of "
            "expression, va, au"
        )
    gt_total = sum(getattr(config, name) * loss for name, loss in losses.items())
    if teacher is None:
        losses["total"] = gt_total
        return losses

    kd: dict[str, torch.Tensor] = {}
    T, on = config.temperature, config.output_kd
    if on and "expression" in outputs and "expression" in teacher:
        kd["expression"] = kd_kl(outputs["expression"], teacher["expression"], T, weight)
    if on and has_va:
        logits = outputs.get("va_logits")
        bins = teacher.get("va_bins")
        if logits is not None and bins is not None and bins.shape == logits.shape:
            kd["va"] = kd_kl(logits, bins, T, weight)
        elif "va" in teacher:
            kd["va"] = kd_mse(va_prediction(outputs), teacher["va"], weight)
    if on and "au" in outputs and "au" in teacher:
        kd["au"] = kd_bce(outputs["au"], teacher["au"], weight)
    for name, loss in kd.items():
        losses[f"kd_{name}"] = loss
    kd_total = sum(getattr(config, name) * loss for name, loss in kd.items())
    total = config.gt * gt_total + config.kd * kd_total
    if config.structural > 0:
        if "embedding" not in teacher:
            raise OmniferError("structural distillation needs the teacher's embeddings; compute "
                               "the teacher targets with soft_targets(..., embeddings=True)")
        if "embedding" not in outputs:
            raise OmniferError("structural distillation needs the student's embedding; use a "
                               "model whose outputs include 'embedding' or set structural=0")
        losses["kd_structural"] = structural_loss(
            outputs["embedding"], teacher["embedding"], anchors=config.anchors,
            rule=config.anchor_rule, epsilon=config.epsilon, iterations=config.iterations)
        total = total + config.structural * losses["kd_structural"]
    losses["total"] = total
    return losses


__all__ = [
    "LossConfig", "VA_LOSSES", "au_pos_weight", "bin_centres", "bin_expectation", "ccc",
    "ccc_loss", "joint_loss", "kd_bce", "kd_kl", "kd_mse", "masked_bce", "masked_cross_entropy",
    "masked_mse", "multitask_loss", "quadrant", "soft_targets", "va_bin_targets", "va_gt_loss",
    "va_prediction",
]
