"""Balancing weights: inverse frequencies, VA histogram flattening, AU oversampling, clipping."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from omnifer.data import make_table
from omnifer.data.samplers import balance_report, balance_weights, source_shares, va_cells
from omnifer.data.table import LabeledSet
from omnifer.errors import OmniferError
from omnifer.labels import EXPRESSIONS


def make_arrays(
    expression=None, va=None, au=None, *, n: int | None = None
) -> dict[str, np.ndarray]:
    """``LabeledSet.arrays()``-shaped dict; ``None`` entries (and -1 / NaN values) are missing."""
    n = n or len(next(x for x in (expression, va, au) if x is not None))
    expr = np.full(n, -1) if expression is None else np.asarray(expression)
    va = np.full((n, 2), np.nan) if va is None else np.asarray(va, np.float32)
    au = np.zeros((n, 0)) if au is None else np.asarray(au, np.float32)
    va_mask = ~np.isnan(va).any(axis=1)
    au_mask = ~np.isnan(au)
    return {
        "expression": np.where(expr >= 0, expr, 0).astype(np.int64),
        "expression_mask": expr >= 0,
        "va": np.where(va_mask[:, None], va, 0).astype(np.float32),
        "va_mask": va_mask,
        "au": np.where(au_mask, au, 0).astype(np.float32),
        "au_mask": au_mask,
        "weight": np.ones(n, np.float32),
    }


def test_expression_inverse_frequency_equalises_class_shares():
    expr = np.repeat([0, 1, 2, 3], [40, 20, 10, 5])
    arrays = make_arrays(expr)
    w = balance_weights(arrays, strategies=("expression",), max_ratio=100.0)
    assert w.dtype == np.float64 and w.shape == (75,)
    assert w.mean() == pytest.approx(1.0)
    # Inverse frequency: class 3 (5 samples) weighs 8x class 0 (40 samples).
    assert w[-1] / w[0] == pytest.approx(8.0)
    report = balance_report(arrays, w, EXPRESSIONS)
    before, after = report["expression"]["before"], report["expression"]["after"]
    assert before["neutral"] == pytest.approx(40 / 75)
    for name in EXPRESSIONS[:4]:
        assert after[name] == pytest.approx(0.25)
    assert after["happiness"] == 0.0


def test_clipping_honours_max_ratio():
    expr = np.repeat([0, 1, 2, 3], [40, 20, 10, 1])
    arrays = make_arrays(expr)
    w = balance_weights(arrays, strategies=("expression",), max_ratio=2.0)
    # Raw weights 1/40, 1/20, 1/10, 1; median 1/40; clipped at 2/40: classes 1..3 all weigh
    # 2x class 0, then the whole is scaled to mean 1.
    assert w.max() / np.median(w) == pytest.approx(2.0)
    assert w[-1] == pytest.approx(w[45])
    assert w.mean() == pytest.approx(1.0)
    # Within the clip the shares still move toward balance: class 0 falls from 40/71.
    after = balance_report(arrays, w, EXPRESSIONS)["expression"]["after"]
    assert after["neutral"] == pytest.approx(40 / (40 + 2 * 31))
    # Each strategy on its own obeys the ratio on random data too.
    rng = np.random.default_rng(0)
    arrays = make_arrays(rng.choice(7, 300, p=[0.5, 0.2, 0.1, 0.1, 0.05, 0.04, 0.01]),
                         rng.uniform(-1, 1, (300, 2)) ** 3,
                         (rng.random((300, 4)) < [0.5, 0.2, 0.05, 0.01]).astype(float))
    for strategy in ("expression", "va", "au"):
        w = balance_weights(arrays, strategies=(strategy,), max_ratio=3.0)
        assert w.max() / np.median(w) <= 3.0 + 1e-9
        assert w.mean() == pytest.approx(1.0)


def test_va_histogram_flattening_reduces_max_cell_share():
    rng = np.random.default_rng(1)
    va = np.concatenate([rng.normal(0.05, 0.03, (180, 2)), rng.uniform(-1, 1, (60, 2))])
    arrays = make_arrays(va=np.clip(va, -1, 1))
    w = balance_weights(arrays, strategies=("va",), va_grid=10, max_ratio=50.0)
    report = balance_report(arrays, w, EXPRESSIONS, va_grid=10)["va"]
    assert report["max_cell_share_before"] > 0.5
    assert report["max_cell_share_after"] < report["max_cell_share_before"] / 5
    # Without clipping every occupied cell would be drawn equally often.
    flat = balance_weights(arrays, strategies=("va",), va_grid=10, max_ratio=1e9)
    flat_report = balance_report(arrays, flat, EXPRESSIONS, va_grid=10)["va"]
    assert flat_report["max_cell_share_after"] == pytest.approx(1 / report["occupied_cells"])


def test_va_cells_by_hand():
    va = np.array([[-1.0, -1.0], [1.0, 1.0], [0.0, -0.05], [-0.55, 0.95]])
    # grid 10: floor((v + 1) * 5) clamped to 0..9 -> (0,0), (9,9), (5,4), (2,9)
    assert va_cells(va, 10).tolist() == [0, 99, 54, 29]


def test_au_oversampling_raises_rare_positive_rate():
    rng = np.random.default_rng(2)
    au = (rng.random((400, 3)) < [0.4, 0.1, 0.03]).astype(float)
    arrays = make_arrays(au=au)
    w = balance_weights(arrays, strategies=("au",), max_ratio=100.0)
    report = balance_report(arrays, w, EXPRESSIONS)["au"]
    before, after = report["positive_rate_before"], report["positive_rate_after"]
    assert before == pytest.approx(list(au.mean(axis=0)))
    assert after[2] > 3 * before[2]
    assert after[1] > before[1]


def test_au_weights_by_hand():
    # Positive rates among the labeled rows 0-3: AU0 2/4, AU1 1/4. Row 0 (AU0, AU1):
    # mean(1 / (2/4), 1 / (1/4)) = mean(2, 4) = 3; row 1 (AU0): 2; rows 2 and 3 are all
    # negative, half of the AU rows: 1 / (2/4) = 2; row 4 carries no AU label -> 1.
    # Scaled to mean 1 over rows 0-3: divide by (3 + 2 + 2 + 2) / 4 = 9/4.
    nan = np.nan
    au = np.array([[1, 1], [1, 0], [0, 0], [0, 0], [nan, nan]])
    w = balance_weights(make_arrays(au=au), strategies=("au",), max_ratio=100.0)
    assert w.tolist() == pytest.approx([3 / 2.25, 2 / 2.25, 2 / 2.25, 2 / 2.25, 1.0])


def test_final_weight_is_the_mean_over_applicable_strategies():
    # Rows 0-2 carry expressions (classes 0, 0, 1) and rows 1-3 carry VA.
    expr = np.array([0, 0, 1, -1])
    va = np.array([[np.nan, np.nan], [0.5, 0.5], [0.5, 0.5], [-0.9, -0.9]])
    arrays = make_arrays(expr, va)
    e = balance_weights(arrays, strategies=("expression",), max_ratio=100.0)
    v = balance_weights(arrays, strategies=("va",), max_ratio=100.0)
    both = balance_weights(arrays, strategies=("expression", "va"), max_ratio=100.0)
    # expression: 1/2, 1/2, 1 -> scaled to mean 1: 0.75, 0.75, 1.5; row 3 -> 1.
    assert e.tolist() == pytest.approx([0.75, 0.75, 1.5, 1.0])
    # va: 1/2, 1/2, 1 for rows 1-3 -> 0.75, 0.75, 1.5; row 0 -> 1.
    assert v.tolist() == pytest.approx([1.0, 0.75, 0.75, 1.5])
    assert both.tolist() == pytest.approx([0.75, 0.75, (1.5 + 0.75) / 2, 1.5])


def test_no_strategy_and_unlabeled_samples_give_ones():
    arrays = make_arrays(np.array([0, 1, 1]))
    assert balance_weights(arrays, strategies=()).tolist() == [1.0, 1.0, 1.0]
    assert balance_weights(arrays, strategies=("va", "au")).tolist() == [1.0, 1.0, 1.0]
    assert balance_weights(make_arrays(n=0, expression=np.zeros(0))).shape == (0,)


def test_unknown_strategy_is_a_one_line_error():
    with pytest.raises(OmniferError) as exc:
        balance_weights(make_arrays(np.array([0, 1])), strategies=("expression", "pose"))
    message = str(exc.value)
    assert "\n" not in message and "'pose'" in message
    assert all(name in message for name in ("expression", "va", "au"))
    for kwargs in ({"max_ratio": 0.5}, {"va_grid": 0}):
        with pytest.raises(OmniferError):
            balance_weights(make_arrays(np.array([0, 1])), **kwargs)
    with pytest.raises(OmniferError):
        balance_report(make_arrays(np.array([0, 1])), np.ones(3), EXPRESSIONS)


def test_works_on_labeled_set_arrays():
    n = 6
    table = make_table(
        sample_id=[f"s{i}" for i in range(n)], image=[f"{i}.png" for i in range(n)],
        source="db", expression=np.array([0, 0, 0, 4, -1, 4]),
        valence=np.array([0.1, np.nan, 0.2, -0.5, 0.3, 0.9]),
        arousal=np.array([0.1, np.nan, 0.2, -0.5, 0.3, 0.9]),
        au={"AU1": np.array([1, 0, 0, np.nan, 0, 1.0]),
            "AU12": np.array([0, 0, 1, np.nan, 0, 0.0])},
        weight=1.0,
    )
    arrays = LabeledSet(table=table, aus=("AU1", "AU12")).arrays()
    w = balance_weights(arrays)
    assert w.shape == (n,) and np.isfinite(w).all() and (w > 0).all()
    report = balance_report(arrays, w, EXPRESSIONS)
    assert report["expression"]["after"]["happiness"] > report["expression"]["before"]["happiness"]
    assert len(report["au"]["positive_rate_after"]) == 2


def test_samplers_do_not_import_torch():
    code = "import sys, omnifer.data.samplers; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_source_shares_give_each_named_source_its_share():
    sources = np.array(["labeled"] * 900 + ["distilled"] * 20 + ["mined"] * 80, dtype=object)
    balance = np.linspace(1, 3, len(sources))
    w = source_shares(balance, sources, {"distilled": 0.3, "mined": 0.2})
    assert w.sum() == pytest.approx(len(w))
    for name, share in (("distilled", 0.3), ("mined", 0.2), ("labeled", 0.5)):
        rows = sources == name
        assert w[rows].sum() / w.sum() == pytest.approx(share)
        assert np.allclose(w[rows] / balance[rows], (w[rows] / balance[rows])[0])  # kept within
    draws = np.random.default_rng(0).choice(len(w), 200_000, p=w / w.sum())
    assert np.mean(sources[draws] == "distilled") == pytest.approx(0.3, abs=0.005)
    assert np.allclose(source_shares(None, sources, {"distilled": 0.3})[sources == "distilled"],
                       0.3 * len(w) / 20)


def test_source_share_errors_are_one_line():
    from omnifer.train import TrainConfig

    with pytest.raises(OmniferError, match="no training sample comes from it; sources: labeled"):
        source_shares(None, np.array(["labeled"] * 3, dtype=object), {"distilled": 0.5})
    assert TrainConfig(source_share="distilled=0.3, mined=0.2").source_share == (
        ("distilled", 0.3), ("mined", 0.2))
    assert TrainConfig(source_share={"distilled": 0.25}).source_share == (("distilled", 0.25),)
    for bad in ("distilled", "distilled=x", "distilled=1.5", "a=0.6,b=0.5"):
        with pytest.raises(OmniferError, match="source_share") as e:
            TrainConfig(source_share=bad)
        assert "\n" not in str(e.value)
