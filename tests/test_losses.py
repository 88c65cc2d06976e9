"""Multitask losses: hand-computed values, masking that gives exactly zero gradient, and
teacher-student distillation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from omnifer.errors import OmniferError
from omnifer.train.losses import (
    LossConfig,
    au_pos_weight,
    bin_centres,
    bin_expectation,
    ccc,
    ccc_loss,
    joint_loss,
    kd_bce,
    kd_kl,
    kd_mse,
    masked_bce,
    masked_cross_entropy,
    multitask_loss,
    quadrant,
    soft_targets,
    va_bin_targets,
)

C, A, N_BINS, D = 7, 5, 8, 16


# ---------------------------------------------------------------- CCC


def test_ccc_by_hand():
    # pred [1, 2, 3], target [2, 4, 6]:
    #   means 2 and 4; var(pred) = (1 + 0 + 1) / 3 = 2/3; var(target) = (4 + 0 + 4) / 3 = 8/3;
    #   cov = ((-1)(-2) + 0 + (1)(2)) / 3 = 4/3; (mean difference)^2 = 4
    #   CCC = 2 * 4/3 / (2/3 + 8/3 + 4) = (8/3) / (22/3) = 4/11
    value = ccc(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 6.0]))
    assert value.item() == pytest.approx(4 / 11, abs=1e-6)
    # Perfect agreement is 1, a sign flip around a common mean is -1.
    x = torch.tensor([-0.5, 0.1, 0.7])
    assert ccc(x, x).item() == pytest.approx(1.0, abs=1e-6)
    assert ccc(x - 0.1, -(x - 0.1)).item() == pytest.approx(-1.0, abs=1e-6)


def test_weighted_ccc_equals_ccc_on_repeated_samples():
    pred = torch.tensor([0.3, -0.2, 0.9, 0.1])
    target = torch.tensor([0.5, -0.6, 0.4, 0.0])
    counts = [2, 1, 3, 1]
    weighted = ccc(pred, target, torch.tensor(counts, dtype=torch.float32))
    repeated = ccc(pred.repeat_interleave(torch.tensor(counts)),
                   target.repeat_interleave(torch.tensor(counts)))
    assert weighted.item() == pytest.approx(repeated.item(), abs=1e-6)
    # Weights scaled by a constant change nothing.
    scaled = ccc(pred, target, 0.1 * torch.tensor(counts, dtype=torch.float32))
    assert scaled.item() == pytest.approx(weighted.item(), abs=1e-6)


def test_ccc_loss_uses_masked_in_samples_only():
    pred = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [50.0, -50.0]])
    target = torch.tensor([[2.0, 2.0], [4.0, 4.0], [6.0, 6.0], [0.0, 0.0]])
    mask = torch.tensor([True, True, True, False])
    loss = ccc_loss(pred, target, mask, torch.ones(4))
    assert loss.item() == pytest.approx(1 - 4 / 11, abs=1e-6)


@pytest.mark.parametrize("labeled", [0, 1])
def test_ccc_loss_with_fewer_than_two_labels_is_an_attached_zero(labeled):
    pred = torch.randn(4, 2, requires_grad=True)
    mask = torch.arange(4) < labeled
    loss = ccc_loss(pred, torch.zeros(4, 2), mask, torch.ones(4))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros(4, 2))


# ---------------------------------------------------------------- bins


def test_bins_by_hand():
    assert torch.allclose(bin_centres(4), torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    values = torch.tensor([[-1.0, -0.75], [-0.5, 0.0], [0.49, 1.0]])
    # floor((v + 1) / 2 * 4): -1 -> 0, -0.75 -> 0.5 -> 0, -0.5 -> 1, 0 -> 2, 0.49 -> 2.98 -> 2,
    # 1 -> 4, clamped to 3.
    assert va_bin_targets(values, 4).tolist() == [[0, 0], [1, 2], [2, 3]]
    assert va_bin_targets(torch.tensor([[-1.0, 1.0]]), 20).tolist() == [[0, 19]]
    # Equal logits: mean of the centres = 0. Probabilities [1, 1, 1, 5] / 8:
    # (-0.75 - 0.25 + 0.25 + 5 * 0.75) / 8 = 3 / 8.
    assert bin_expectation(torch.zeros(4)).item() == pytest.approx(0.0, abs=1e-7)
    logits = torch.log(torch.tensor([[1.0, 1.0, 1.0, 5.0]]))
    assert bin_expectation(logits).tolist() == pytest.approx([0.375], abs=1e-6)
    assert bin_expectation(torch.zeros(3, 2, 4)).shape == (3, 2)


def test_quadrant_and_joint_target():
    va = torch.tensor([[0.5, -0.2], [-0.1, 0.3], [0.0, 0.0], [-0.4, -0.4]])
    assert quadrant(va).tolist() == [2, 1, 3, 0]
    # Sample 0 has both labels: expression 2, quadrant 2 -> joint class 10; the others lack one.
    batch = {
        "expression": torch.tensor([2, 1, 0, 0]),
        "expression_mask": torch.tensor([True, True, False, True]),
        "va": va, "va_mask": torch.tensor([True, False, True, False]),
        "weight": torch.ones(4),
    }
    logits = torch.zeros(4, 4 * C)
    logits[0, 10] = math.log(3.0 * (4 * C - 1))  # p(class 10) = 3(4C-1) / (3(4C-1) + 4C-1) = 3/4
    assert joint_loss(logits, batch).item() == pytest.approx(math.log(4 / 3), abs=1e-5)


# ---------------------------------------------------------------- masked losses


def test_masked_cross_entropy_by_hand():
    # Sample 0: logits [0, 0], target 0 -> CE ln 2, weight 2.
    # Sample 1: logits [ln 3, 0] (probabilities 3/4, 1/4), target 1 -> CE ln 4, weight 0.5.
    # Sample 2: masked out (its logits and weight must not matter).
    # L = (2 ln 2 + 0.5 ln 4) / 2 labeled samples = 1.5 ln 2.
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [100.0, -100.0]])
    target = torch.tensor([0, 1, 1])
    mask = torch.tensor([True, True, False])
    weight = torch.tensor([2.0, 0.5, 7.0])
    loss = masked_cross_entropy(logits, target, mask, weight)
    assert loss.item() == pytest.approx(1.5 * math.log(2.0), abs=1e-6)


def test_masked_cross_entropy_ignores_garbage_targets_of_missing_samples():
    logits = torch.zeros(2, 3, requires_grad=True)
    loss = masked_cross_entropy(logits, torch.tensor([1, -1]), torch.tensor([True, False]))
    loss.backward()
    assert loss.item() == pytest.approx(math.log(3.0), abs=1e-6)
    assert torch.equal(logits.grad[1], torch.zeros(3))


def test_masked_bce_normalises_by_labeled_pairs_and_uses_pos_weight():
    # Labeled pairs: (0, 0) target 1 logit 0 -> ln 2 * pos_weight 3; (0, 1) target 0 logit 0 ->
    # ln 2; (1, 1) target 1 logit 0 -> ln 2 * pos_weight 1, sample weight 2.
    # L = (3 ln 2 + ln 2 + 2 ln 2) / 3 pairs = 2 ln 2.
    logits = torch.zeros(2, 2)
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mask = torch.tensor([[True, True], [False, True]])
    loss = masked_bce(logits, target, mask, torch.tensor([1.0, 2.0]), torch.tensor([3.0, 1.0]))
    assert loss.item() == pytest.approx(2 * math.log(2.0), abs=1e-6)


def test_au_pos_weight():
    au = np.array([[1, 0, 0], [0, 0, 1], [0, 0, 1], [0, 1, 1], [1, 0, 0]], np.float32)
    mask = np.ones_like(au, dtype=bool)
    mask[4, 0] = False  # AU0: 1 positive, 3 negatives -> 3
    # AU1: 1 positive, 4 negatives -> 4; AU2: 3 positives, 2 negatives -> 2/3.
    assert au_pos_weight(au, mask).tolist() == pytest.approx([3.0, 4.0, 2 / 3])
    # Clipped to [1/max, max]; an AU with no labeled positive gets 1.
    au2 = np.array([[1, 0], [0, 0], [0, 0], [0, 0], [0, 0]], np.float32)
    assert au_pos_weight(au2, np.ones_like(au2, bool), max_weight=2).tolist() == [2.0, 1.0]
    assert au_pos_weight(np.ones((4, 1)), np.ones((4, 1), bool), max_weight=2).tolist() == [0.5]
    with pytest.raises(OmniferError):
        au_pos_weight(au, mask, max_weight=0.5)


# ---------------------------------------------------------------- distillation


def test_kd_kl_two_classes_by_hand_and_t_squared():
    # T = 2, student logits [0, 2 ln 3] -> / T -> [0, ln 3] -> q = [1/4, 3/4];
    # teacher p = [1/2, 1/2].
    # KL(p || q) = 0.5 ln(0.5 / 0.25) + 0.5 ln(0.5 / 0.75) = 0.5 ln(4/3) = 0.143841...
    # times T^2 = 4 -> 2 ln(4/3) = 0.575364...
    student = torch.tensor([[0.0, 2 * math.log(3.0)]])
    teacher = torch.tensor([[0.5, 0.5]])
    assert kd_kl(student, teacher, 2.0).item() == pytest.approx(2 * math.log(4 / 3), abs=1e-6)
    # Same softened distribution at T = 1 gives the bare KL: the T^2 factor is the only change.
    at_one = kd_kl(student / 2, teacher, 1.0)
    assert at_one.item() == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)
    # Weighted over samples: sum(w * kl) / B. Second sample matches its teacher (KL 0).
    students = torch.tensor([[0.0, 2 * math.log(3.0)], [0.0, 0.0]])
    teachers = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    loss = kd_kl(students, teachers, 2.0, torch.tensor([0.5, 3.0]))
    assert loss.item() == pytest.approx(0.5 * 2 * math.log(4 / 3) / 2, abs=1e-6)


def test_kd_kl_on_bins_averages_the_two_dims():
    # Dim 0 as above (KL 0.5 ln(4/3) at T = 1), dim 1 matches its teacher (KL 0).
    student = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0]]])
    teacher = torch.full((1, 2, 2), 0.5)
    assert kd_kl(student, teacher, 1.0).item() == pytest.approx(0.25 * math.log(4 / 3), abs=1e-6)


def test_kd_bce_and_kd_mse_by_hand():
    # Logit 0 against p = 0.5 and p = 1: BCE ln 2 each; mean over 2 x 2 pairs with w = [1, 0].
    logits = torch.zeros(2, 2)
    probs = torch.tensor([[0.5, 1.0], [0.2, 0.7]])
    assert kd_bce(logits, probs, torch.tensor([1.0, 0.0])).item() == pytest.approx(
        2 * math.log(2.0) / 4, abs=1e-6
    )
    # Squared errors (0.2^2 + 0.4^2) / 2 = 0.1 and 0; sum(w * e) / B = 2 * 0.1 / 2.
    pred = torch.tensor([[0.2, 0.4], [0.1, 0.1]])
    target = torch.tensor([[0.0, 0.0], [0.1, 0.1]])
    assert kd_mse(pred, target, torch.tensor([2.0, 1.0])).item() == pytest.approx(0.1, abs=1e-6)


def test_soft_targets_average_the_members_probabilities():
    torch.manual_seed(0)
    members = [
        {"expression": torch.randn(3, C), "va_logits": torch.randn(3, 2, N_BINS),
         "va": torch.rand(3, 2) * 2 - 1, "au": torch.randn(3, A)}
        for _ in range(2)
    ]
    T = 2.0
    out = soft_targets(members, T)
    expected = (torch.softmax(members[0]["expression"] / T, -1)
                + torch.softmax(members[1]["expression"] / T, -1)) / 2
    assert torch.allclose(out["expression"], expected)
    assert torch.allclose(out["expression"].sum(-1), torch.ones(3))
    bins = (torch.softmax(members[0]["va_logits"] / T, -1)
            + torch.softmax(members[1]["va_logits"] / T, -1)) / 2
    assert torch.allclose(out["va_bins"], bins)
    # VA values of a binned member are its bin expectation (untempered).
    va = (bin_expectation(members[0]["va_logits"]) + bin_expectation(members[1]["va_logits"])) / 2
    assert torch.allclose(out["va"], va)
    au = (torch.sigmoid(members[0]["au"]) + torch.sigmoid(members[1]["au"])) / 2
    assert torch.allclose(out["au"], au)
    # A regression member: "va" is the mean of values, no "va_bins".
    out = soft_targets([{"va": torch.tensor([[0.2, -0.4]])}, {"va": torch.tensor([[0.6, 0.0]])}], T)
    assert set(out) == {"va"}
    assert torch.allclose(out["va"], torch.tensor([[0.4, -0.2]]))
    with pytest.raises(OmniferError):
        soft_targets([], T)


# ---------------------------------------------------------------- config and total


def test_loss_config_validates_with_one_line_errors():
    for kwargs in ({"expression": -1.0}, {"kd": -0.1}, {"temperature": 0.0},
                   {"va_loss": "l1"}):
        with pytest.raises(OmniferError) as exc:
            LossConfig(**kwargs)
        assert "\n" not in str(exc.value)
    assert "ccc+mse" in str(pytest.raises(OmniferError, LossConfig, va_loss="l1").value)


class TinyModel(nn.Module):
    """A Linear trunk with one Linear head per task, producing the output dict."""

    def __init__(self, *, binned: bool = True):
        super().__init__()
        self.binned = binned
        self.trunk = nn.Linear(8, D)
        self.heads = nn.ModuleDict({
            "expression": nn.Linear(D, C),
            "va": nn.Linear(D, 2 * N_BINS if binned else 2),
            "au": nn.Linear(D, A),
            "joint": nn.Linear(D, 4 * C),
        })

    def forward(self, x):
        z = torch.relu(self.trunk(x))
        out = {"embedding": z, "expression": self.heads["expression"](z),
               "au": self.heads["au"](z), "joint": self.heads["joint"](z)}
        if self.binned:
            out["va_logits"] = self.heads["va"](z).view(-1, 2, N_BINS)
            out["va"] = bin_expectation(out["va_logits"])
        else:
            out["va"] = torch.tanh(self.heads["va"](z))
        return out


def make_batch(b: int = 6, *, expression=True, va=True, au=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "expression": torch.randint(0, C, (b,), generator=g) * int(expression),
        "expression_mask": torch.full((b,), expression),
        "va": (torch.rand(b, 2, generator=g) * 2 - 1) * int(va),
        "va_mask": torch.full((b,), va),
        "au": (torch.rand(b, A, generator=g) > 0.6).float() * int(au),
        "au_mask": torch.full((b, A), au),
        "weight": torch.rand(b, generator=g) + 0.5,
    }


def head_grads(model, losses):
    model.zero_grad(set_to_none=True)
    losses["total"].backward()
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    grads = {}
    for name, head in model.heads.items():
        g = [p.grad for p in head.parameters()]
        grads[name] = 0.0 if any(x is None for x in g) else sum(float(x.abs().sum()) for x in g)
    return grads


def test_total_without_and_with_teacher():
    torch.manual_seed(0)
    model = TinyModel()
    out = model(torch.randn(6, 8))
    batch = make_batch()
    cfg = LossConfig(expression=1.0, va=2.0, au=0.5, joint=0.25, gt=0.7, kd=0.3)
    losses = multitask_loss(out, batch, config=cfg)
    assert set(losses) == {"expression", "va", "au", "joint", "total"}
    expected = (losses["expression"] + 2 * losses["va"] + 0.5 * losses["au"]
                + 0.25 * losses["joint"])
    assert losses["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    with torch.no_grad():
        teacher = soft_targets([TinyModel()(torch.randn(6, 8))], cfg.temperature)
    losses = multitask_loss(out, batch, config=cfg, teacher=teacher)
    assert {"kd_expression", "kd_va", "kd_au"} <= set(losses)
    kd = losses["kd_expression"] + 2 * losses["kd_va"] + 0.5 * losses["kd_au"]
    assert losses["total"].item() == pytest.approx(0.7 * expected.item() + 0.3 * kd.item(),
                                                   rel=1e-6)
    # The binned student distils its bins from the binned teacher's.
    assert losses["kd_va"].item() == pytest.approx(
        kd_kl(out["va_logits"], teacher["va_bins"], cfg.temperature, batch["weight"]).item()
    )


def test_only_present_heads_get_losses():
    out = {"embedding": torch.zeros(6, D), "expression": torch.zeros(6, C)}
    assert set(multitask_loss(out, make_batch())) == {"expression", "total"}
    with pytest.raises(OmniferError):
        multitask_loss({"embedding": torch.zeros(6, D)}, make_batch())


@pytest.mark.parametrize("binned", [True, False])
@pytest.mark.parametrize("va_loss", ["ccc", "mse", "ccc+mse"])
@pytest.mark.parametrize("absent", ["expression", "va", "au"])
def test_absent_task_gives_exactly_zero_gradient(absent, va_loss, binned):
    torch.manual_seed(0)
    model = TinyModel(binned=binned)
    batch = make_batch(**{absent: False})
    losses = multitask_loss(model(torch.randn(6, 8)), batch, config=LossConfig(va_loss=va_loss))
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses[absent].item() == 0.0
    grads = head_grads(model, losses)
    # The joint head needs both expression and VA labels.
    zero = {absent, "joint"} if absent in ("expression", "va") else {absent}
    for name, g in grads.items():
        if name in zero:
            assert g == 0.0, name
        else:
            assert g > 0.0, name
    # "Exactly zero" as tensors too, when a gradient was allocated.
    for p in model.heads[absent].parameters():
        assert p.grad is None or torch.equal(p.grad, torch.zeros_like(p.grad))


def test_no_labels_at_all_is_finite_and_zero():
    torch.manual_seed(0)
    model = TinyModel()
    losses = multitask_loss(model(torch.randn(4, 8)),
                            make_batch(4, expression=False, va=False, au=False))
    assert losses["total"].item() == 0.0
    assert all(g == 0.0 for g in head_grads(model, losses).values())


@pytest.mark.parametrize("binned", [True, False])
def test_teacher_gives_gradient_to_every_head_even_without_labels(binned):
    torch.manual_seed(0)
    model = TinyModel(binned=binned)
    x = torch.randn(6, 8)
    with torch.no_grad():
        teacher = soft_targets([TinyModel(binned=binned)(x), TinyModel(binned=binned)(x)], 2.0)
    batch = make_batch(expression=False, va=False, au=False)
    losses = multitask_loss(model(x), batch, teacher=teacher)
    assert all(torch.isfinite(v) for v in losses.values())
    grads = head_grads(model, losses)
    for name in ("expression", "va", "au"):
        assert grads[name] > 0.0, name
    assert grads["joint"] == 0.0  # no distillation term for the joint head


def test_regress_student_distils_from_binned_teacher_values():
    torch.manual_seed(0)
    x = torch.randn(6, 8)
    with torch.no_grad():
        teacher = soft_targets([TinyModel(binned=True)(x)], 2.0)
    out = TinyModel(binned=False)(x)
    batch = make_batch()
    losses = multitask_loss(out, batch, teacher=teacher)
    assert losses["kd_va"].item() == pytest.approx(
        kd_mse(out["va"], teacher["va"], batch["weight"]).item()
    )
