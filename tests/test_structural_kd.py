"""Structural distillation: the Sinkhorn divergence by hand and against POT, anchors, teacher
similarity rows across embedding sizes, the multitask loss term and a short student run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnifer.errors import OmniferError
from omnifer.train.losses import LossConfig, multitask_loss, soft_targets
from omnifer.train.structural import (
    select_anchors,
    similarity_rows,
    sinkhorn_cost,
    sinkhorn_divergence,
    structural_loss,
)


def f64(rows):
    return torch.tensor(rows, dtype=torch.float64)


# ---------------------------------------------------------------- the divergence by hand


def test_one_point_against_one_point_is_the_squared_distance():
    # A single point must send all its mass to the other: the cost is |x - y|^2 = 1 + 4 + 4,
    # and a point against itself costs nothing, whatever epsilon.
    x, y = f64([[1.0, 2.0, 3.0]]), f64([[0.0, 0.0, 1.0]])
    for eps in (0.01, 1.0, 100.0):
        assert sinkhorn_cost(x, y, eps, 3).item() == pytest.approx(9.0, rel=1e-12)
        assert sinkhorn_divergence(x, y, eps, 3).item() == pytest.approx(9.0, rel=1e-12)


@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
def test_two_points_with_small_epsilon_give_the_assignment_cost(order):
    # x = (0,0), (2,0); y = (0,1), (2,1) in either order. Matching each point to the one above
    # it costs (1 + 1) / 2 = 1 (weights 1/2); the crossed matching (5 + 5) / 2 = 5. Within a
    # cloud the points are 4 apart, so its self-transport is ~0 and the divergence is ~1.
    x, y = f64([[0.0, 0.0], [2.0, 0.0]]), f64([[0.0, 1.0], [2.0, 1.0]])[order]
    assert sinkhorn_cost(x, y, 0.05, 100).item() == pytest.approx(1.0, abs=1e-9)
    assert sinkhorn_cost(x, x, 0.05, 100).item() == pytest.approx(0.0, abs=1e-9)
    assert sinkhorn_divergence(x, y, 0.05, 100).item() == pytest.approx(1.0, abs=1e-9)


def test_identical_clouds_are_at_zero_and_others_above():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 6, generator=g, dtype=torch.float64)
    assert sinkhorn_divergence(x, x.clone(), 0.05, 50).item() == 0.0
    for _ in range(20):
        y = torch.randn(12, 6, generator=g, dtype=torch.float64)
        near = x + 0.05 * torch.randn(12, 6, generator=g, dtype=torch.float64)
        assert sinkhorn_divergence(x, y, 0.05, 50).item() > 0
        assert sinkhorn_divergence(x, near, 0.05, 50).item() >= 0


def test_a_gradient_step_moves_the_student_toward_the_teacher():
    g = torch.Generator().manual_seed(1)
    teacher = torch.rand(16, 8, generator=g)
    student = torch.rand(16, 8, generator=g).requires_grad_()
    before = sinkhorn_divergence(student, teacher, 0.05, 50)
    before.backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
    with torch.no_grad():
        after = sinkhorn_divergence(student - 2.0 * student.grad, teacher, 0.05, 50)
    assert 0 <= after.item() < before.item()


# ---------------------------------------------------------------- against POT


@pytest.mark.parametrize("eps", [0.05, 0.2])
def test_agrees_with_pot(eps):
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(3)
    x, y = rng.random((16, 8)), rng.random((16, 8))
    a = np.full(16, 1 / 16)

    def pot(p, q):
        return ot.sinkhorn2(a, a, ot.dist(p, q), reg=eps, numItermax=100_000, stopThr=1e-13)

    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    assert sinkhorn_cost(tx, ty, eps, 2000).item() == pytest.approx(pot(x, y), rel=1e-8)
    want = pot(x, y) - 0.5 * pot(x, x) - 0.5 * pot(y, y)
    assert sinkhorn_divergence(tx, ty, eps, 2000).item() == pytest.approx(want, rel=1e-7)
    # The training default (50 iterations) stops short of convergence, but not by much.
    assert sinkhorn_cost(tx, ty, eps, 50).item() == pytest.approx(pot(x, y), rel=1e-3)


# ---------------------------------------------------------------- anchors and rows


def test_anchor_rules():
    t = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0], [1.0, 0.0]])
    # From row 0, the opposite direction (row 3) is farthest, then the orthogonal one (row 2),
    # then row 1 (row 4 duplicates row 0 and is never taken before the distinct rows).
    assert select_anchors(t, 3, "farthest").tolist() == [0, 3, 2]
    assert select_anchors(t, 4, "farthest").tolist() == [0, 3, 2, 1]
    picked = select_anchors(torch.eye(3).repeat(4, 1), 6, "farthest").tolist()
    assert len(set(picked)) == 6 and set(picked[:3]) == {0, 1, 2}
    assert select_anchors(t, 3, "random").tolist() == [0, 1, 2]
    for rule in ("random", "farthest"):
        assert select_anchors(t, 50, rule).tolist() == [0, 1, 2, 3, 4]
        assert select_anchors(t[:, None].expand(5, 3, 2), 3, rule).tolist() \
            == select_anchors(t, 3, rule).tolist()
    with pytest.raises(OmniferError, match="anchor rule"):
        select_anchors(t, 3, "nearest")


def test_rows_are_cosine_similarities_in_each_space():
    g = torch.Generator().manual_seed(2)
    teacher, student = torch.randn(10, 3, 32, generator=g), torch.randn(10, 8, generator=g)
    idx = select_anchors(teacher, 4, "farthest")
    rows = similarity_rows(3.0 * student, idx)
    assert rows.shape == (10, 4) and similarity_rows(teacher[:, 0], idx).shape == (10, 4)
    want = torch.nn.functional.cosine_similarity(student[:, None], student[idx][None], dim=-1)
    assert torch.allclose(rows, want, atol=1e-6)
    # The teacher rows are the mean of the members' rows (never rows of a mean embedding).
    mean_rows = torch.stack([similarity_rows(teacher[:, m], idx) for m in range(3)]).mean(0)
    loss = structural_loss(student, teacher, anchors=4, rule="farthest")
    assert loss.item() == pytest.approx(
        sinkhorn_divergence(similarity_rows(student, idx), mean_rows, 0.05, 50).item(), rel=1e-6)
    assert loss.item() != pytest.approx(structural_loss(student, teacher.mean(1), anchors=4,
                                                        rule="farthest").item(), rel=1e-3)


def test_a_student_in_another_space_with_the_same_structure_has_zero_loss():
    g = torch.Generator().manual_seed(4)
    teacher = torch.randn(12, 32, generator=g, dtype=torch.float64)
    basis = torch.linalg.qr(torch.randn(32, 32, generator=g, dtype=torch.float64))[0]
    twin = 5.0 * teacher @ basis  # rotated and rescaled: the same cosine similarities
    assert structural_loss(twin, teacher, anchors=6).item() == pytest.approx(0.0, abs=1e-9)
    small = torch.randn(12, 8, generator=g, dtype=torch.float64)  # D = 8 against D = 32
    assert structural_loss(small, teacher, anchors=6).item() > 1e-3


@pytest.mark.parametrize("student, teacher, match", [
    ((6, 8), (5, 8), "batch has 6 rows"),
    ((1, 8), (1, 8), "at least 2 samples"),
    ((6,), (6, 8), r"\[B, D\]"),
])
def test_bad_inputs_are_one_line_errors(student, teacher, match):
    with pytest.raises(OmniferError, match=match) as err:
        structural_loss(torch.randn(*student), torch.randn(*teacher))
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- the multitask loss


def heads(n=8, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"expression": torch.randn(n, 3, generator=g).requires_grad_(),
            "embedding": torch.randn(n, d, generator=g).requires_grad_()}


def batch(n=8):
    return {"expression": torch.arange(n) % 3, "expression_mask": torch.ones(n, dtype=bool),
            "weight": torch.ones(n)}


def test_multitask_loss_adds_the_weighted_structural_term():
    out = heads()
    teacher = soft_targets([heads(d=32, seed=1), heads(d=32, seed=2)], 2.0, embeddings=True)
    assert teacher["embedding"].shape == (8, 2, 32)
    cfg = LossConfig(gt=0.6, kd=0.4, structural=0.5, anchors=4, anchor_rule="farthest")
    losses = multitask_loss(out, batch(), config=cfg, teacher=teacher)
    want = structural_loss(out["embedding"], teacher["embedding"], anchors=4, rule="farthest")
    assert losses["kd_structural"].item() == pytest.approx(want.item(), rel=1e-6)
    assert losses["total"].item() == pytest.approx(
        0.6 * losses["expression"].item() + 0.4 * losses["kd_expression"].item()
        + 0.5 * want.item(), rel=1e-6)
    losses["total"].backward()
    assert out["embedding"].grad.abs().sum() > 0
    # Structural only: no output terms, and the embedding alone carries the distillation.
    out = heads()
    losses = multitask_loss(out, batch(), config=LossConfig(output_kd=False, structural=1.0),
                            teacher=teacher)
    assert "kd_expression" not in losses and "kd_structural" in losses
    assert losses["total"].item() == pytest.approx(
        0.6 * losses["expression"].item() + losses["kd_structural"].item(), rel=1e-6)
    # Without a structural weight, no term and no need for embeddings.
    plain = soft_targets([heads(seed=1)], 2.0)
    assert "embedding" not in plain
    assert "kd_structural" not in multitask_loss(heads(), batch(), teacher=plain)


def test_structural_needs_the_teachers_embeddings():
    plain = soft_targets([heads(seed=1)], 2.0)
    with pytest.raises(OmniferError, match="embeddings=True") as err:
        multitask_loss(heads(), batch(), config=LossConfig(structural=1.0), teacher=plain)
    assert "\n" not in str(err.value)
    with pytest.raises(OmniferError, match="embedding") as err:
        soft_targets([heads(d=8), heads(d=16)], 2.0, embeddings=True)
    assert "\n" not in str(err.value)


def test_sinkhorn_options_are_checked():
    x = torch.zeros(2, 3)
    for eps, iterations in ((0.0, 10), (0.1, 0)):
        with pytest.raises(OmniferError, match="Sinkhorn"):
            sinkhorn_cost(x, x, eps, iterations)


@pytest.mark.parametrize("bad", [dict(structural=-1.0), dict(anchors=1), dict(epsilon=0.0),
                                 dict(iterations=0), dict(anchor_rule="nearest")])
def test_loss_config_checks_the_structural_options(bad):
    with pytest.raises(OmniferError) as err:
        LossConfig(**bad)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- a student run


def test_student_learns_the_teachers_structure(tiny_synth, tmp_path):
    from omnifer.data import read_labeled
    from omnifer.models import build_model
    from omnifer.train import TrainConfig, train
    from omnifer.train.loop import model_config_for

    data = read_labeled(tiny_synth.labeled_toml)
    data = data.subset(np.arange(0, len(data), 2))  # every source, every task
    cfg = TrainConfig(backbone="convnet", input_size=32, epochs=1, batch_size=8, val_fraction=0.0,
                      patience=0, device="cpu", augment=False, kd=("output", "structural"),
                      anchors=4, anchor_rule="farthest")
    teachers = [build_model(model_config_for(data, cfg), seed=s) for s in (1, 2)]
    result = train(data, tmp_path / "both", config=cfg, cache_dir=tmp_path / "cache",
                   teachers=teachers)
    loss = result.history[0][0]["loss"]
    assert {"kd_structural", "kd_expression"} <= set(loss) and np.isfinite(loss["total"])
    targets = torch.load(tmp_path / "both" / "teacher_targets.pt", weights_only=True)
    assert targets["embedding"].shape == (len(data), 2, teachers[0].embedding_dim)
    only = train(data, tmp_path / "only", config=cfg.replace(kd="structural"),
                 cache_dir=tmp_path / "cache", teachers=teachers)
    loss = only.history[0][0]["loss"]
    assert "kd_structural" in loss and "kd_expression" not in loss
