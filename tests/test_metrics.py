"""Metrics, temperature scaling and evaluation plots against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from omnifer import metrics
from omnifer.errors import OmniferError

Y_TRUE = np.array([0, 0, 1, 2, 2, 2])
Y_PRED = np.array([0, 1, 1, 2, 0, 2])
# per class: 0 -> TP 1, FP 1, FN 1 (F1 1/2); 1 -> TP 1, FP 1 (F1 2/3); 2 -> TP 2, FN 1 (F1 4/5)
HAND_F1 = np.array([1 / 2, 2 / 3, 4 / 5])

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- expressions

def test_confusion_matrix_and_accuracy():
    cm = metrics.confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert metrics.accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)


def test_f1_per_class_and_macro_f1_by_hand():
    np.testing.assert_allclose(metrics.f1_per_class(Y_TRUE, Y_PRED, 3), HAND_F1)
    assert metrics.macro_f1(Y_TRUE, Y_PRED, 3) == pytest.approx(HAND_F1.mean())
    # a class absent from both arrays is NaN and does not count in the mean
    f1 = metrics.f1_per_class(Y_TRUE, Y_PRED, 4)
    assert math.isnan(f1[3])
    assert metrics.macro_f1(Y_TRUE, Y_PRED, 4) == pytest.approx(HAND_F1.mean())
    # a class only predicted scores 0 and counts
    assert metrics.macro_f1([0, 0], [0, 1], 3) == pytest.approx((2 / 3 + 0) / 2)


def test_macro_f1_matches_sklearn():
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 7, 200))
    labels = np.union1d(y_true, y_pred)
    expected = skm.f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0)
    assert metrics.macro_f1(y_true, y_pred, 8) == pytest.approx(expected)


def test_abaw_expr_score():
    assert metrics.abaw_expr_score(0.5, 0.8) == pytest.approx(0.67 * 0.5 + 0.33 * 0.8)


def test_labels_out_of_range_is_one_line_error():
    with pytest.raises(OmniferError, match="outside") as info:
        metrics.confusion_matrix([0, 3], [0, 1], 3)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- valence / arousal

def test_ccc_by_hand():
    # means 2 and 4, variances 2/3 and 8/3, covariance 4/3: 2*(4/3) / (2/3 + 8/3 + 4) = 4/11
    assert metrics.ccc([1, 2, 3], [2, 4, 6]) == pytest.approx(4 / 11)
    assert metrics.ccc([0.1, -0.5, 0.9], [0.1, -0.5, 0.9]) == pytest.approx(1.0)
    assert metrics.ccc([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert metrics.ccc([0.3, 0.3], [0.3, 0.3]) == 0.0  # zero denominator


# ---------------------------------------------------------------- action units

def test_binary_f1():
    assert metrics.binary_f1([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.5)
    assert metrics.binary_f1([0, 0], [0, 0]) == 0.0  # zero_division=0
    with pytest.raises(OmniferError, match="0 and 1"):
        metrics.binary_f1([0, 1], [0.2, 0.7])


def test_au_f1_honours_mask_and_marks_unlabeled_aus():
    y_true = np.array([[1, 0, 1], [0, 0, 0], [1, 0, 1], [1, 0, 0]])
    y_pred = np.array([[1, 1, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    mask = np.array([[1, 0, 1], [1, 0, 1], [1, 0, 1], [0, 0, 1]], dtype=bool)
    f1 = metrics.au_f1(y_true, y_pred, mask)
    assert f1[0] == pytest.approx(1.0)  # the wrong prediction in row 3 is masked out
    assert math.isnan(f1[1])  # no labeled row
    # AU 2: TP 1, FN 1 (row 2), FP 1 (row 3) -> 2 / 4
    assert f1[2] == pytest.approx(0.5)
    unmasked = metrics.au_f1(y_true, y_pred)
    assert unmasked[0] == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))
    assert unmasked[1] == 0.0  # labels but no true positives


def test_au_f1_ignores_values_in_unlabeled_cells():
    y_true = np.array([[1.0], [np.nan]])
    assert metrics.au_f1(y_true, [[1], [1]], [[True], [False]])[0] == pytest.approx(1.0)


def test_tune_thresholds_finds_the_best_threshold():
    y = np.array([[0, 1, 0], [0, 1, 0], [1, 1, 0], [1, 1, 0], [1, 1, 0]])
    p = np.array([[0.10, 0.99, 0.9], [0.35, 0.99, 0.9], [0.42, 0.99, 0.9],
                  [0.70, 0.99, 0.9], [0.90, 0.99, 0.9]])
    mask = np.ones_like(y, dtype=bool)
    mask[:, 2] = False
    thr = metrics.tune_thresholds(y, p, mask)
    assert thr[0] == pytest.approx(0.40)  # the only grid point in (0.35, 0.42]
    assert thr[1] == pytest.approx(0.50)  # every threshold is perfect: the tie goes to 0.5
    assert thr[2] == 0.5  # no labeled row
    pred = p[:, 0] >= thr[0]
    assert metrics.binary_f1(y[:, 0], pred) == pytest.approx(1.0)
    assert metrics.tune_thresholds(y, p, mask, grid=[0.2, 0.8])[0] == pytest.approx(0.2)


# ---------------------------------------------------------------- calibration metrics

def test_softmax_is_stable_and_tempered():
    p = metrics.softmax(np.array([[1000.0, 1000.0], [0.0, math.log(3.0)]]))
    np.testing.assert_allclose(p, [[0.5, 0.5], [0.25, 0.75]])
    hot = metrics.softmax([[0.0, 2 * math.log(3.0)]], temperature=2.0)
    np.testing.assert_allclose(hot, [[0.25, 0.75]])
    with pytest.raises(OmniferError, match="temperature"):
        metrics.softmax([[0.0, 1.0]], temperature=0.0)


def test_nll_by_hand():
    probs = np.array([[0.7, 0.3], [0.2, 0.8]])
    assert metrics.nll(probs, [0, 0]) == pytest.approx(-(math.log(0.7) + math.log(0.2)) / 2)
    assert metrics.nll([[1.0, 0.0]], [1]) == pytest.approx(-math.log(1e-12))


def test_ece_and_reliability_bins_by_hand():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.45, 0.55]])
    y = np.array([0, 1, 0, 1])  # top-1 correct: yes, no, yes, yes
    # 3 bins: (1/3, 2/3] holds 0.6 and 0.55 (acc 1, conf 0.575); (2/3, 1] holds 0.9 and 0.8
    # (acc 0.5, conf 0.85). ECE = 0.5 * 0.425 + 0.5 * 0.35
    assert metrics.ece(probs, y, n_bins=3) == pytest.approx(0.3875)
    bins = metrics.reliability_bins(probs, y, n_bins=3)
    np.testing.assert_array_equal(bins["count"], [0, 2, 2])
    np.testing.assert_allclose(bins["accuracy"], [np.nan, 1.0, 0.5])
    np.testing.assert_allclose(bins["confidence"], [np.nan, 0.575, 0.85])
    np.testing.assert_allclose(bins["edges"], [0, 1 / 3, 2 / 3, 1])
    # one bin: |0.75 - 0.7125|
    assert metrics.ece(probs, y, n_bins=1) == pytest.approx(0.0375)
    # bins are closed on the right: a confidence of exactly 0.5 falls in (0, 0.5]
    assert metrics.reliability_bins([[0.5, 0.5]], [0], n_bins=2)["count"].tolist() == [1, 0]


def test_auroc_by_hand():
    assert metrics.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # ties count one half: (1 + 0.5 + 2) / 4
    assert metrics.auroc([1, 2, 2, 3], [0, 0, 1, 1]) == pytest.approx(0.875)
    assert metrics.auroc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)
    assert math.isnan(metrics.auroc([0.1, 0.2], [1, 1]))


def test_auroc_matches_sklearn():
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)  # rounding makes ties
    assert metrics.auroc(scores, labels) == pytest.approx(skm.roc_auc_score(labels, scores))


@pytest.mark.parametrize("call", [
    lambda: metrics.accuracy([0, 1, 2], [0, 1]),
    lambda: metrics.ccc([0.1, 0.2], [0.1, 0.2, 0.3]),
    lambda: metrics.au_f1(np.zeros((3, 2)), np.zeros((3, 3))),
    lambda: metrics.au_f1(np.zeros((3, 2)), np.zeros((3, 2)), np.ones((2, 2))),
    lambda: metrics.nll(np.full((3, 2), 0.5), [0, 1]),
    lambda: metrics.auroc([0.1, 0.2, 0.3], [0, 1]),
])
def test_shape_mismatch_is_one_line_error_with_shapes(call):
    with pytest.raises(OmniferError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    assert "shape" in message and "(" in message


def test_empty_input_is_an_error():
    with pytest.raises(OmniferError, match="empty"):
        metrics.accuracy([], [])
    with pytest.raises(OmniferError, match="empty"):
        metrics.macro_f1([], [], 3)


# ---------------------------------------------------------------- temperature scaling

def _sampled(k: float, n: int = 6000, c: int = 7, seed: int = 0):
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0.0, 2.0, (n, c))
    p = metrics.softmax(true_logits)
    y = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return true_logits * k, y


@pytest.mark.parametrize("k", [3.0, 1.0, 0.5])
def test_fit_temperature_recovers_known_temperature(k):
    from omnifer.train.calibration import fit_temperature, temperature_nll

    logits, y = _sampled(k)
    t = fit_temperature(logits, y)
    assert t == pytest.approx(k, rel=0.1)
    # a minimum: nudging T either way does not lower the NLL
    best = temperature_nll(logits, y, t)
    assert best <= temperature_nll(logits, y, t * 1.05)
    assert best <= temperature_nll(logits, y, t / 1.05)
    assert metrics.nll(metrics.softmax(logits, temperature=t), y) == pytest.approx(best)


def test_fit_temperature_lowers_ece_of_overconfident_logits():
    from omnifer.train.calibration import fit_temperature

    logits, y = _sampled(3.0)
    t = fit_temperature(logits, y)
    before = metrics.ece(metrics.softmax(logits), y)
    after = metrics.ece(metrics.softmax(logits, temperature=t), y)
    assert after < before / 2


def test_fit_temperature_rejects_bad_input():
    from omnifer.train.calibration import fit_temperature

    with pytest.raises(OmniferError, match="empty"):
        fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int))
    with pytest.raises(OmniferError, match="shape") as info:
        fit_temperature(np.zeros((4, 3)), np.zeros(3, dtype=int))
    assert "\n" not in str(info.value)
    with pytest.raises(OmniferError, match="bounds"):
        fit_temperature(np.zeros((4, 3)), np.zeros(4, dtype=int), bounds=(2.0, 1.0))


# ---------------------------------------------------------------- plots

def _assert_png_only(folder, path):
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 1000
    assert sorted(p.name for p in folder.iterdir()) == [path.name]  # no temp files left


def test_reliability_diagram_writes_png(tmp_path):
    from omnifer.train.plots import reliability_diagram

    logits, y = _sampled(3.0, n=500)
    probs = metrics.softmax(logits)
    out = reliability_diagram(tmp_path / "one.png", probs, y, n_bins=10)
    _assert_png_only(tmp_path, out)
    folder = tmp_path / "two"
    out = reliability_diagram(folder / "rel.png", probs, y,
                              probs_after=metrics.softmax(logits, temperature=3.0))
    _assert_png_only(folder, out)


def test_confusion_plot_writes_png(tmp_path):
    from omnifer.train.plots import confusion_plot

    cm = metrics.confusion_matrix(Y_TRUE, Y_PRED, 4)  # class 3 has an empty row
    names = ["neutral", "anger", "disgust", "fear"]
    out = confusion_plot(tmp_path / "cm.png", cm, names)
    _assert_png_only(tmp_path, out)
    raw = confusion_plot(tmp_path / "raw" / "cm.png", cm, names, normalize=False)
    _assert_png_only(tmp_path / "raw", raw)
    with pytest.raises(OmniferError, match="class names"):
        confusion_plot(tmp_path / "bad.png", cm, names[:3])


def test_plots_leave_no_open_figures(tmp_path):
    import matplotlib.pyplot as plt

    from omnifer.train.plots import confusion_plot

    before = len(plt.get_fignums())
    confusion_plot(tmp_path / "cm.png", np.eye(2, dtype=int), ["a", "b"])
    assert len(plt.get_fignums()) == before
