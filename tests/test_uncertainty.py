"""Uncertainty decomposition, Brier score, FPR at 95% TPR and the OOD scores, against values
worked out by hand."""

import math

import numpy as np
import pytest

from omnifer import metrics as M
from omnifer import uncertainty as U
from omnifer.errors import OmniferError


def test_decompose_separates_ambiguity_from_disagreement():
    # sample 0: both members say 50/50 (aleatoric); sample 1: each is sure, they disagree
    p = np.array([[[0.5, 0.5], [1.0, 0.0]],
                  [[0.5, 0.5], [0.0, 1.0]]])
    u = U.decompose(p)
    assert np.allclose(u["total"], [1, 1])
    assert np.allclose(u["aleatoric"], [1, 0])
    assert np.allclose(u["epistemic"], [0, 1])


def test_decompose_is_normalised_by_log_c_and_averages_inner_axes():
    p = np.full((1, 3, 2, 4), 0.25)  # one member, uniform over 4 bins, 2 dims (VA)
    u = U.decompose(p)
    assert np.allclose(u["total"], 1) and np.allclose(u["epistemic"], 0)
    q = np.array([[[0.9, 0.1]], [[0.6, 0.4]]])
    h = lambda x: -(x * math.log(x) + (1 - x) * math.log(1 - x)) / math.log(2)  # noqa: E731
    u = U.decompose(q)
    assert np.isclose(u["total"][0], h(0.75))
    assert np.isclose(u["aleatoric"][0], (h(0.9) + h(0.6)) / 2)


def test_binary_outputs_are_two_class_predictions():
    p = np.array([[[0.5, 1.0]], [[0.5, 0.0]]])  # 2 members, 1 sample, 2 AUs
    u = U.decompose_binary(p)
    assert np.allclose(u["total"], [1.0])  # mean of AU1 (1) and AU2 (1)
    assert np.allclose(u["aleatoric"], [0.5]) and np.allclose(u["epistemic"], [0.5])


def test_decompose_refuses_the_wrong_shape():
    with pytest.raises(OmniferError, match=r"shape \(3, 2\).*\[members, samples"):
        U.decompose(np.ones((3, 2)))


def test_brier_and_fpr_at_tpr():
    assert M.brier([[1, 0], [0.5, 0.5]], [0, 1]) == pytest.approx(0.25)
    assert M.brier([[0, 1]], [0]) == pytest.approx(2.0)
    scores = [0.1, 0.4, 0.35, 0.8, 0.9, 0.3]
    labels = [0, 0, 0, 1, 1, 1]
    # 95% of 3 positives -> all 3 -> threshold 0.3 -> negatives 0.4, 0.35 flagged
    assert M.fpr_at_tpr(scores, labels) == pytest.approx(2 / 3)
    assert M.fpr_at_tpr(scores, labels, tpr=0.6) == pytest.approx(0.0)
    assert math.isnan(M.fpr_at_tpr([1, 2], [1, 1]))


def test_ood_scores_and_separation():
    from omnifer.train import ood

    ref = np.eye(4, dtype=np.float32)
    emb = np.array([[1, 0, 0, 0], [0.6, 0.8, 0, 0]], np.float32)
    d = ood.knn_distance(emb, ref, k=1)
    assert np.allclose(d, [0.0, 0.2])
    assert np.allclose(ood.knn_distance(emb, ref, k=99), [1.0, 1.0])  # k capped at 4
    pred = {"expression_probs": np.array([[0.9, 0.1], [0.5, 0.5]]), "embedding": emb}
    unc = {"expression_total": np.array([0.4, 1.0]), "expression_epistemic": np.array([0, .2])}
    s = ood.scores(pred, unc, reference=ref)
    assert set(s) == set(ood.SCORES) and np.allclose(s["max_softmax"], [0.1, 0.5])
    sep = ood.separation({"entropy": np.array([0.1, 0.2])}, {"entropy": np.array([0.3, 0.9])})
    assert sep["entropy"]["auroc"] == 1.0 and sep["entropy"]["fpr95"] == 0.0
