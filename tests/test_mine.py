"""Mining: selection, caps, leak guard, threshold calibration, index search, the mined dataset
and the ``omnifer mine`` command."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from omnifer.errors import OmniferError
from omnifer.mining.engine import evidence, select
from omnifer.mining.calibration import (
    GRID,
    Calibration,
    class_thresholds,
    error_bound,
    first_testable,
    precision_interval,
)
from omnifer.mining.crossfit import assign_folds, cross_fit
from omnifer.mining.duplicates import duplicate_clusters
from omnifer.mining.mine import MineConfig, check_classes, mine

CLASSES = ("a", "b", "c")
#: one global threshold, no out-of-distribution cut, no duplicate clusters
FIXED = dict(calibrate=False, ood_quantile=0, duplicate_threshold=None)
FIXED_CLI = ("--no-calibrate", "--ood-quantile", "0")


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clusters(n_per, spread, rng, centres):
    labels = np.repeat(np.arange(len(centres)), n_per)
    return unit(centres[labels] + spread * rng.standard_normal((len(labels), centres.shape[1]))), labels


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    centres = unit(rng.standard_normal((3, 16)))
    labeled, labels = clusters(40, 0.08, rng, centres)
    pool, truth = clusters(100, 0.12, rng, centres)
    pool = np.concatenate([pool, unit(rng.standard_normal((50, 16)))])  # distractors
    return pool.astype(np.float16), labeled, labels, truth


def test_mine_keeps_what_select_keeps_ordered_by_class_and_score(data):
    pool, labeled, labels, truth = data
    cfg = MineConfig(threshold=0.9, margin=0.02, min_votes=3, **FIXED)
    r = mine(pool, labeled, labels, classes=CLASSES, config=cfg)
    ev = evidence(pool, labeled, labels, 3, floor=0.9)
    expect = ev.rows[select(ev, threshold=0.9, margin=0.02, min_votes=3)]
    assert sorted(r.rows) == sorted(expect) and len(expect) > 30
    assert np.all(np.diff(r.labels) >= 0)  # by class, then score
    for c in range(3):
        assert np.all(np.diff(r.scores[r.labels == c]) <= 0)
    assert np.all(r.scores >= 0.9) and np.all(r.margins >= 0.02) and np.all(r.votes >= 3)
    assert (r.labels == truth[r.rows]).mean() > 0.95  # clustered data: mined labels are right
    assert r.counts["mined"] == len(r.rows) == sum(r.counts[f"mined_{c}"] for c in CLASSES)
    assert r.search == "exact" and r.recall is None


def test_caps_and_leak_guard(data):
    pool, labeled, labels, _ = data
    full = mine(pool, labeled, labels, classes=CLASSES, config=MineConfig(threshold=0.85, **FIXED))
    per = np.bincount(full.labels, minlength=3)
    capped = mine(pool, labeled, labels, classes=CLASSES,
                  config=MineConfig(threshold=0.85, per_class_max=5, **FIXED))
    assert list(np.bincount(capped.labels, minlength=3)) == list(np.minimum(per, 5))
    for c in range(3):  # the best-scored ones stay
        assert np.allclose(capped.scores[capped.labels == c], full.scores[full.labels == c][:5])
    bal = mine(pool, labeled, labels, classes=CLASSES,
               config=MineConfig(threshold=0.85, balance=1.5, **FIXED))
    assert bal.counts["capped"] == full.counts["mined"] - bal.counts["mined"]
    assert np.bincount(bal.labels, minlength=3).max() <= int(1.5 * per.min())
    # evaluation images copied into the pool (slightly changed) are never mined
    leaked = full.rows[:7]
    test = unit(pool[leaked].astype(np.float32) + 1e-3)
    guarded = mine(pool, labeled, labels, classes=CLASSES,
                   config=MineConfig(threshold=0.85, **FIXED), exclude=test)
    assert not np.isin(leaked, guarded.rows).any()
    assert guarded.counts["leak_excluded"] == 7 and guarded.counts["leak_near_duplicates"] >= 7
    assert guarded.counts["mined"] == full.counts["mined"] - 7


def test_error_bound_is_clopper_pearson():
    # no error in n: the bound solves (1 - p)^n = 1 - confidence
    for n in (1, 10, 45):
        assert error_bound(np.array([0]), np.array([n]), 0.9)[0] == pytest.approx(
            1 - 0.1 ** (1 / n))
    # n - 1 errors of n: the bound solves 1 - p^n = 1 - confidence... checked against scipy
    from scipy.stats import beta
    assert error_bound(np.array([3]), np.array([20]), 0.95)[0] == pytest.approx(
        beta.ppf(0.95, 4, 17))
    assert error_bound(np.array([0, 5]), np.array([0, 5]), 0.9).tolist() == [1.0, 1.0]
    assert first_testable(0.95, 0.9) == 45  # 0.95^45 < 0.1 <= 0.95^44
    low, high = precision_interval(90, 100, 0.9)
    assert low < 0.9 < high and precision_interval(0, 0, 0.9) is None


def _brute_threshold(score, wrong, target, confidence, grid):
    """The Learn-then-Test rule spelt out: the largest tested prefix whose Bonferroni-level
    Clopper-Pearson error bound is within 1 - target."""
    from scipy.stats import beta

    order = np.argsort(-score, kind="stable")
    score, wrong = score[order], wrong[order]
    level = 1 - (1 - confidence) / grid
    start = int(np.ceil(np.log(1 - level) / np.log(target)))
    kept = 0
    for n in np.unique(np.geomspace(start, len(score), grid).round().astype(int)):
        e = wrong[:n].sum()
        if (1.0 if e >= n else beta.ppf(level, e + 1, n - e)) <= 1 - target:
            kept = n
    return score[kept - 1] if kept else np.inf


def test_class_thresholds_follow_the_learn_then_test_rule():
    rng = np.random.default_rng(3)
    # class 0: right faces score high, wrong ones spread lower; class 1: mostly wrong
    s0 = np.sort(rng.uniform(0.5, 1.0, 400))[::-1]
    w0 = rng.uniform(size=400) < np.clip(np.linspace(-0.1, 0.4, 400), 0, None)
    s1 = rng.uniform(0.5, 1.0, 100)
    w1 = rng.uniform(size=100) < 0.5
    cal = Calibration(truth=np.r_[np.where(w0, 1, 0), np.where(w1, 0, 1)],
                      best=np.r_[np.zeros(400, int), np.ones(100, int)],
                      score=np.r_[s0, s1], eligible=np.ones(500, bool),
                      kth=np.ones(500, np.float32), nearest=np.ones(500), confidence=0.9)
    t, why, weak = class_thresholds(cal, 0.9, 3, floor=None)
    assert t[0] == pytest.approx(_brute_threshold(s0, w0, 0.9, 0.9, GRID)) and np.isfinite(t[0])
    assert np.isinf(t[1]) and "below the target 0.9" in why[1]
    assert np.isinf(t[2]) and "0 calibration faces" in why[2] and why[0] is None
    kept = cal.kept(t) & (cal.best == 0)
    assert 1 - w0[kept[:400]].mean() >= 0.9  # the kept faces are that precise here
    # the floor: a threshold never below it; all faces under it do not count
    t_floor, _, _ = class_thresholds(cal, 0.9, 3, floor=0.99)
    assert t_floor[0] >= 0.99 or np.isinf(t_floor[0])
    est = cal.estimate(t)
    assert est["per_class"][0]["kept"] == kept.sum()
    low, high = est["per_class"][0]["interval"]
    assert low <= est["per_class"][0]["precision"] <= high


def test_a_class_with_few_calibration_faces_is_mined_at_the_floor_only_when_they_agree():
    n = 30  # too few for the bound at 0.95 (it needs 104), enough for the floor rule
    score = np.linspace(0.99, 0.91, n)
    cal = Calibration(truth=np.r_[np.zeros(n, int), np.ones(n, int), np.full(5, 2)],
                      best=np.r_[np.zeros(n, int), np.ones(n, int), np.full(5, 2)],
                      score=np.r_[score, score, score[:5]], eligible=np.ones(2 * n + 5, bool),
                      kth=np.ones(2 * n + 5), nearest=np.ones(2 * n + 5), confidence=0.9)
    cal.truth[n:n + 5] = 0  # class 1: 5 of its 30 are wrong
    t, why, weak = class_thresholds(cal, 0.95, 3, floor=0.9)
    assert t[0] == 0.9 and "without the precision bound" in weak[0] and why[0] is None
    assert np.isinf(t[1]) and "precision 0.833" in why[1]
    assert np.isinf(t[2]) and "5 calibration faces" in why[2]  # fewer than MIN_FACES
    # without a floor there is nothing to fall back to
    assert np.isinf(class_thresholds(cal, 0.95, 3, floor=None)[0][0])


def test_prior_shift_weights_measure_precision_at_the_pool_balance():
    from omnifer.mining.priors import confusion, pool_priors, shift_weights

    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1], 5000)  # balanced calibration
    best = np.where(rng.uniform(size=10000) < 0.9, truth, 1 - truth)  # 10% confused
    conf = confusion(best, truth, 2)
    assert np.allclose(conf.sum(axis=0), 1) and conf[0, 0] == pytest.approx(0.9, abs=0.03)
    # a pool of 80% class 0 mined by the same rule
    pt = (rng.uniform(size=20000) < 0.2).astype(int)
    pb = np.where(rng.uniform(size=20000) < 0.9, pt, 1 - pt)
    pi = pool_priors(best, truth, pb, 2)
    assert pi == pytest.approx([0.8, 0.2], abs=0.02)
    w = shift_weights(truth, pi, 2, np.ones(10000, bool))
    right = best == truth
    kept1 = best == 1  # precision of class 1 at the pool's balance: 0.9*0.2 / (0.9*0.2 + 0.1*0.8)
    weighted = (w[kept1] * right[kept1]).sum() / w[kept1].sum()
    assert weighted == pytest.approx(0.18 / 0.26, abs=0.03) and right[kept1].mean() > 0.85
    assert pool_priors(best, truth, np.zeros(0, int), 2) is None


def test_cross_fit_scores_every_labeled_face_from_the_other_folds():
    rng = np.random.default_rng(0)
    centres = unit(rng.standard_normal((3, 16)))
    labeled, labels = clusters(30, 0.2, rng, centres)
    labels[0] = 2  # a class with one face stays in every reference
    labeled = np.concatenate([labeled, unit(rng.standard_normal((1, 16)))])
    labels = np.r_[labels, 1]
    ev, fold = cross_fit(labeled, labels, 3, k=5, score="vote", folds=5, seed=0)
    single = np.flatnonzero(np.bincount(labels)[labels] == 1)
    assert (fold[single] == -1).all()
    assert np.array_equal(ev.rows, np.flatnonzero(fold >= 0))
    assert (fold[ev.neighbours] != fold[ev.rows][:, None]).all()  # never its own fold
    counts = [np.bincount(fold[(labels == c) & (fold >= 0)], minlength=5) for c in range(3)]
    assert all(c.max() - c.min() <= 1 for c in counts)  # classes spread evenly
    assert np.array_equal(assign_folds(labels, 3, 5, 0), fold)  # deterministic
    with pytest.raises(OmniferError, match="at least 2"):
        assign_folds(labels, 3, 1, 0)


def test_duplicate_clusters_merge_near_copies_of_one_class_only():
    rng = np.random.default_rng(0)
    base = unit(rng.standard_normal((4, 32)))
    x = unit(np.concatenate([base[[0, 0, 0]] + 1e-3 * rng.standard_normal((3, 32)), base[1:]]))
    labels = np.array([0, 0, 1, 0, 0, 0])  # row 2 copies rows 0-1 but is mined as class 1
    anchors = np.zeros(6, int)
    scores = np.array([0.5, 0.9, 0.8, 0.7, 0.6, 0.4])
    head = duplicate_clusters(x, labels, anchors, scores, 0.99)
    assert head.tolist() == [1, 1, 2, 3, 4, 5]
    assert duplicate_clusters(x, labels, anchors, scores, None).tolist() == list(range(6))
    # faces with different nearest labeled faces are not compared
    assert duplicate_clusters(x, labels, np.arange(6), scores, 0.99).tolist() == list(range(6))


def test_duplicates_count_once_toward_caps(data):
    pool, labeled, labels, _ = data
    cfg = dict(threshold=0.85, calibrate=False, ood_quantile=0)
    base = mine(pool, labeled, labels, classes=CLASSES, config=MineConfig(**cfg))
    top = base.rows[(base.labels == 0) & (base.duplicate_of < 0)][0]
    copies = unit(pool[[top] * 4].astype(np.float32)
                  + 1e-3 * np.random.default_rng(1).standard_normal((4, 16)))
    grown = np.concatenate([pool, copies.astype(np.float16)])
    r = mine(grown, labeled, labels, classes=CLASSES, config=MineConfig(**cfg, per_class_max=3))
    a = r.labels == 0
    family = np.isin(r.rows, [top, *range(len(pool), len(grown))])
    assert family.sum() == 5 and r.counts["duplicates_merged"] >= 4
    head = np.where(r.duplicate_of < 0, r.rows, r.duplicate_of)
    assert len(set(head[family])) == 1 and (r.duplicate_of[family] < 0).sum() == 1
    assert (a & (r.duplicate_of < 0)).sum() == 3  # three clusters kept, one of five faces
    off = mine(grown, labeled, labels, classes=CLASSES,
               config=MineConfig(**cfg, per_class_max=3, duplicate_threshold=None))
    assert (off.labels == 0).sum() == 3 and off.counts["duplicates_merged"] == 0


def test_out_of_distribution_faces_are_rejected():
    rng = np.random.default_rng(0)
    centres = unit(rng.standard_normal((3, 16)))
    labeled, labels = clusters(60, 0.1, rng, centres)
    pool, truth = clusters(100, 0.1, rng, centres)  # drawn like the labeled faces
    pool = np.concatenate([pool, unit(rng.standard_normal((50, 16)))]).astype(np.float16)
    distractor = np.arange(len(pool)) >= len(truth)
    loose = dict(threshold=0.3, calibrate=False, duplicate_threshold=None, k=5)
    off = mine(pool, labeled, labels, classes=CLASSES, config=MineConfig(**loose, ood_quantile=0))
    on = mine(pool, labeled, labels, classes=CLASSES,
              config=MineConfig(**loose, ood_quantile=0.02))
    assert distractor[off.rows].sum() > 0 and distractor[on.rows].sum() == 0
    assert on.counts["ood_rejected"] >= distractor[off.rows].sum()
    assert on.counts["ood_far_from_labeled"] == on.counts["ood_rejected"]  # no norms given
    assert (~distractor[on.rows]).sum() >= 0.95 * (~distractor[off.rows]).sum()


def test_faces_with_weak_features_are_rejected_by_their_norm(tmp_path):
    """Pool faces whose embedding lies among the labeled faces but whose feature norm is below
    the labeled faces' ood_quantile are out of distribution; without norms they are mined."""
    rng = np.random.default_rng(1)
    centres = unit(rng.standard_normal((3, 16)))
    labeled, labels = clusters(60, 0.1, rng, centres)
    pool, truth = clusters(100, 0.1, rng, centres)
    pool = pool.astype(np.float16)
    labeled_norms = rng.uniform(8, 12, len(labeled)).astype(np.float32)
    pool_norms = rng.uniform(10, 12, len(pool)).astype(np.float32)  # above the cut
    weak = rng.random(len(pool)) < 0.2
    pool_norms[weak] = rng.uniform(2, 5, weak.sum())
    cfg = MineConfig(threshold=0.3, calibrate=False, duplicate_threshold=None, k=5,
                     ood_quantile=0.05)
    off = mine(pool, labeled, labels, classes=CLASSES, config=cfg)
    on = mine(pool, labeled, labels, classes=CLASSES, config=cfg, pool_norms=pool_norms,
              labeled_norms=labeled_norms)
    assert weak[off.rows].sum() > 0.15 * len(pool) and weak[on.rows].sum() == 0
    assert set(off.rows[~weak[off.rows]]) == set(on.rows)  # the others stay
    assert on.counts["ood_low_feature_norm"] == weak[off.rows].sum()
    assert on.norm_cut == pytest.approx(np.quantile(labeled_norms, 0.05, method="lower"))
    assert not np.isfinite(off.norm_cut) and off.counts["ood_low_feature_norm"] == 0
    from omnifer.mining.report import summary_lines

    line = f"{weak[off.rows].sum()} whose feature norm is below the labeled faces' at the cut"
    assert any(f"{line} (< {on.norm_cut:.2f})" in x for x in summary_lines(on, CLASSES))
    from PIL import Image

    from omnifer.mining.report import out_of_distribution

    one = Image.open(out_of_distribution(off, tmp_path / "one.png")).size
    two = Image.open(out_of_distribution(on, tmp_path / "two.png")).size
    assert two[0] > 1.8 * one[0] and two[1] == one[1]  # a second panel: the feature norm
    with pytest.raises(OmniferError, match="feature norms for"):
        mine(pool, labeled, labels, classes=CLASSES, config=cfg, pool_norms=pool_norms[1:],
             labeled_norms=labeled_norms)


def test_calibration_leaves_out_labeled_faces_with_weak_features(data):
    """The calibration faces are the ones the pool check would keep: weak labeled faces are
    not eligible."""
    pool, labeled, labels, _ = data
    norms = np.full(len(labeled), 10.0, np.float32)
    norms[::4] = 1.0  # a quarter of the labeled faces, above the 0.2 quantile
    cfg = MineConfig(threshold=0.5, ood_quantile=0.3)
    r = mine(pool, labeled, labels, classes=CLASSES, config=cfg,
             pool_norms=np.full(len(pool), 10.0, np.float32), labeled_norms=norms)
    cal = r.calibration
    assert cal.norm is not None and r.norm_cut == 10.0
    assert not cal.eligible[cal.norm < 10].any() and cal.eligible[cal.norm >= 10].any()


def test_classes_option_and_left_out_classes(data):
    pool, labeled, labels, _ = data
    r = mine(pool, labeled, labels, classes=CLASSES,
             config=MineConfig(threshold=0.85, classes=("b",), **FIXED))
    assert set(r.labels.tolist()) == {1} and r.left_out[0] == "not among --classes"
    from omnifer.mining.report import class_rows, markdown, summary_lines

    lines = summary_lines(r, CLASSES)
    assert "a was not mined: not among --classes" in lines
    assert any(line.startswith("out of distribution: ") for line in lines)
    assert class_rows(r, CLASSES)[0]["left_out"] == "not among --classes"
    cal = mine(pool, labeled, labels, classes=CLASSES, config=MineConfig(threshold=0.85))
    text = markdown(cal, classes=CLASSES, config=MineConfig(threshold=0.85), inputs={})
    assert "target precision 0.95 at confidence 0.9" in text and "90% interval" in "\n".join(
        summary_lines(cal, CLASSES))
    with pytest.raises(OmniferError, match="class 'z' .* is not in the labeled set"):
        mine(pool, labeled, labels, classes=CLASSES, config=MineConfig(classes=("z",)))


def test_target_precision_estimate_is_close_to_the_truth():
    rng = np.random.default_rng(1)
    centres = unit(rng.standard_normal((3, 16)))
    labeled, labels = clusters(200, 0.35, rng, centres)
    pool, truth = clusters(300, 0.35, rng, centres)
    r = mine(pool.astype(np.float16), labeled, labels, classes=CLASSES,
             config=MineConfig(threshold=None, target_precision=0.9))
    assert np.isfinite(r.thresholds).all() and r.estimate["precision"] >= 0.9
    true = (r.labels == truth[r.rows]).mean()
    assert abs(true - r.estimate["precision"]) < 0.04 and len(r.rows) > 100
    for c in range(3):  # each class at the target, as the bound promises
        assert (truth[r.rows][r.labels == c] == c).mean() >= 0.89


def test_index_search_equals_exact_on_a_flat_index_and_reports_recall(data):
    faiss_index = pytest.importorskip("omnifer.pools.faiss_index")
    pytest.importorskip("faiss")
    pool, labeled, labels, _ = data
    cfg = MineConfig(threshold=0.85, search="index", **FIXED)
    exact = mine(pool, labeled, labels, classes=CLASSES, config=MineConfig(threshold=0.85, **FIXED))
    flat = faiss_index.build_index(pool.astype(np.float32), factory="Flat", device="cpu")
    via = mine(pool, labeled, labels, classes=CLASSES, config=cfg, index=flat)
    assert via.search == "index" and np.array_equal(via.rows, exact.rows)
    assert via.recall["recall"] == 1.0
    proto = MineConfig(threshold=0.85, prototypes=True, **FIXED)
    exact_p = mine(pool, labeled, labels, classes=CLASSES, config=proto)
    via_p = mine(pool, labeled, labels, classes=CLASSES, index=flat,
                 config=MineConfig(threshold=0.85, prototypes=True, search="index", **FIXED))
    assert len(exact_p.rows) > 30 and np.array_equal(via_p.rows, exact_p.rows)
    ivf = faiss_index.build_index(pool.astype(np.float32), factory="IVF8,Flat", device="cpu")
    ivf.nprobe = 1
    approx = mine(pool, labeled, labels, classes=CLASSES, config=MineConfig(threshold=0.85, **FIXED),
                  index=ivf, approximate=True)
    hit = np.isin(exact.rows, approx.rows).mean()
    assert approx.search == "index" and 0 < approx.recall["recall"] <= 1
    assert approx.recall["recall"] == pytest.approx(hit)  # the sample is the whole pool here


def test_bad_input_gives_one_line_errors(data):
    pool, labeled, labels, _ = data
    for kw in ({"threshold": 1.5}, {"threshold": -2}, {"k": 0}, {"score": "median"},
               {"threshold": None, "calibrate": False}, {"target_precision": 1.5},
               {"target_precision": -0.1}, {"target_precision": 0}, {"target_precision": 1.0}, {"balance": 0.5},
               {"confidence": 1.0}, {"folds": 1}, {"ood_quantile": 1.0},
               {"duplicate_threshold": 2.0}, {"classes": ()}):
        with pytest.raises(OmniferError) as err:
            MineConfig(**kw)
        assert "\n" not in str(err.value)
    with pytest.raises(OmniferError, match="class 'c' has no labeled example"):
        check_classes(np.array([0, 1, 1]), CLASSES)
    with pytest.raises(OmniferError, match="no face with an expression label"):
        check_classes(np.zeros(0, np.int64), CLASSES)
    with pytest.raises(OmniferError, match="dimension"):
        mine(pool[:, :8], labeled, labels, classes=CLASSES, config=MineConfig())


# ---------------------------------------------------------------- the command

@pytest.fixture(scope="module")
def indexed(tiny_synth, tmp_path_factory, omnifer_steps):
    """A workspace with a trained model and an index of the tiny pool."""
    pytest.importorskip("faiss")
    return omnifer_steps(
        tmp_path_factory.mktemp("mine-ws"),
        ["train", "--data", tiny_synth.labeled_toml, "--backbone", "convnet", "--size", "32",
         "--epochs", "2", "--device", "cpu"],
        ["index", tiny_synth.pool, "--workers", "0", "--device", "cpu"])


@pytest.mark.slow
def test_cli_mine_writes_a_dataset_the_trainer_reads(indexed, tiny_synth, run_cli):
    from omnifer.data import LabeledSet

    ws = indexed
    # a model trained for two epochs on 80 faces embeds every face alike: only exact copies
    # of test images count as leaks here
    common = ["-w", ws, "mine", "--labeled", tiny_synth.labeled_toml, "--exclude",
              tiny_synth.test_toml, "--leak-threshold", "1.0", "--device", "cpu", *FIXED_CLI]
    r = run_cli.json(*common, "--threshold", "0.2", "--k", "3", "--score", "max")
    assert r["counts"]["mined"] > 0
    mined = LabeledSet.load(r["dataset"])
    assert len(mined) == r["counts"]["mined"] and set(mined.sources) == {"mined"}
    table = pd.read_parquet(r["dataset"])
    for col in ("key", "label", "score", "margin", "votes", "neighbours", "model_fingerprint",
                "index_fingerprint"):
        assert col in table.columns
    assert (table["score"] >= 0.2).all() and table["neighbours"].map(len).eq(3).all()
    assert all(mined.table["image"].map(lambda p: __import__("os").path.isfile(p)))
    run = ws / ".omnifer/runs" / r["run"]
    for name in ("report.md", "histograms.png", "precision_coverage.png",
                 "out_of_distribution.png"):
        assert (run / name).stat().st_size > 0
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["similarity"].startswith("cosine") and manifest["status"] == "complete"
    # the trainer takes the run as a data source
    code, out, err = run_cli("-q", "-w", ws, "train", "--data", tiny_synth.labeled_toml,
                             "--with", r["run"], "--backbone", "convnet", "--size", "32",
                             "--epochs", "1", "--device", "cpu", "--fresh")
    assert code == 0, err
    # a stricter threshold mines a subset; the text output names the similarity
    code, out, err = run_cli(*common, "--threshold", "0.8")
    assert code == 0 and "cosine" in out


def test_cli_mine_refuses_bad_input_without_writing(indexed, tiny_synth, tmp_path, run_cli):
    from omnifer.models import ModelConfig, build_model, save_checkpoint

    ws = indexed
    before = sorted((ws / ".omnifer/runs").glob("mine/*"))
    base = ["-w", ws, "mine", "--labeled", tiny_synth.labeled_toml, "--device", "cpu"]
    code, out, err = run_cli(*base, "--threshold", "1.2")
    assert code != 0 and "[-1, 1]" in err
    other = tmp_path / "other"
    save_checkpoint(build_model(ModelConfig(backbone="convnet", input_size=32), seed=5), other)
    code, out, err = run_cli(*base, "--model", other)
    assert code != 0 and "not the one that built" in err and len(err.strip().splitlines()) == 1
    empty = tmp_path / "empty.csv"
    empty.write_text("image,expression\n")
    code, out, err = run_cli("-w", ws, "mine", "--labeled", empty, "--device", "cpu")
    assert code != 0
    for flags, message in ((["--k", "100000"], "k is 100000 but the labeled set has"),
                           (["--classes", "contempt"], "class 'contempt' (of --classes) is not"),
                           (["--target-precision", "1.5"], "target_precision is 1.5"),
                           (["--target-precision", "0"], "target_precision is 0.0"),
                           (["--balance", "nan"], "balance is nan"),
                           (["--balance", "inf"], "balance is inf")):
        code, out, err = run_cli(*base, "--threshold", "0.5", *flags)
        assert code != 0 and message in err and len(err.strip().splitlines()) == 1
    assert sorted((ws / ".omnifer/runs").glob("mine/*")) == before


def test_cli_mine_never_mines_edited_copies_of_test_images(indexed, tiny_synth, tmp_path,
                                                           run_cli):
    """Mirrored, brightened and recompressed copies of test images in the pool are caught by
    the perceptual hash even with the embedding check off (--leak-threshold 1)."""
    import shutil

    from PIL import Image

    from omnifer.data import read_labeled
    from omnifer.models.embedder import Embedder
    from omnifer.pipeline.embeddings import labeled_embeddings
    from omnifer.workspace import Workspace

    ws = indexed
    pool = tmp_path / "pool"
    shutil.copytree(tiny_synth.pool, pool)
    test = read_labeled(tiny_synth.test_toml)
    for i, ref in enumerate(test.table["image"][:4]):
        x = np.asarray(Image.open(ref).convert("RGB"))
        bright = np.clip(x.astype(np.float32) * 1.15, 0, 255).astype(np.uint8)
        for name, image, quality in (("mirror", x[:, ::-1], 95), ("bright", bright, 95),
                                     ("jpeg60", x, 60)):
            Image.fromarray(np.ascontiguousarray(image)).save(pool / f"copy-{name}-{i}.jpg",
                                                              quality=quality)
    r = run_cli.json("-w", ws, "index", pool, "--workers", "0", "--device", "cpu")
    m = run_cli.json("-w", ws, "mine", "--index", r["run"], "--labeled", tiny_synth.labeled_toml,
                     "--exclude", tiny_synth.test_toml, "--threshold", "-1", "--k", "3",
                     "--score", "max", "--leak-threshold", "1.0", "--device", "cpu", *FIXED_CLI)
    keys = pd.read_parquet(m["dataset"])["key"]
    assert len(keys) > 0 and not keys.str.startswith("copy-").any()
    assert m["counts"]["leak_excluded"] >= 12 and m["counts"]["leak_excluded_hash"] > 0
    # the embedding check compares with the mirror images of the test faces too
    model = Workspace(ws).locate(json.loads(
        (ws / ".omnifer/runs" / r["run"] / "manifest.json").read_text())["config"]["model"])
    mirrored = labeled_embeddings(Workspace(ws), test, model, "cpu", mirrored=True)
    from omnifer.data.cache import decoded_images
    from omnifer.pipeline.embeddings import image_cache

    images = decoded_images(test, 32, image_cache(Workspace(ws)))
    expect = Embedder(model, device="cpu")(np.ascontiguousarray(images[:, :, ::-1]))
    assert np.allclose(mirrored.astype(np.float32), expect.astype(np.float32), atol=2e-3)


@pytest.mark.slow
def test_cli_mine_exports_images_of_an_archive_pool(indexed, tiny_synth, tmp_path, run_cli):
    """A RecordIO pool cannot be opened by path: the mined images are written into the run,
    byte for byte."""
    from omnifer.data import LabeledSet
    from omnifer.pools.recordio import write_recordio

    files = sorted(tiny_synth.pool.rglob("*.jpg"))
    prefix = tmp_path / "rec" / "train"
    prefix.parent.mkdir()
    write_recordio(prefix, [f.read_bytes() for f in files], [0.0] * len(files))
    ws = indexed
    r = run_cli.json("-w", ws, "index", prefix.parent, "--workers", "0", "--device", "cpu")
    m = run_cli.json("-w", ws, "mine", "--index", r["run"], "--labeled", tiny_synth.labeled_toml,
                     "--threshold", "0.2", "--k", "3", "--score", "max", "--device", "cpu",
                     *FIXED_CLI)
    mined = LabeledSet.load(m["dataset"])
    assert len(mined) > 0
    originals = {f.read_bytes() for f in files}
    for image in mined.table["image"]:
        assert image.startswith(str(ws)) and image.endswith(".jpg")
        assert open(image, "rb").read() in originals


@pytest.mark.slow
def test_cli_mine_exports_aligned_faces_of_a_detected_pool(indexed, tiny_synth, tmp_path,
                                                            run_cli):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("retinaface.weights")
    data = pytest.importorskip("skimage.data")
    from PIL import Image

    from omnifer.data import LabeledSet
    from omnifer.faces import align_face

    pool = tmp_path / "photos"
    pool.mkdir()
    Image.fromarray(data.astronaut()).save(pool / "astronaut.png")
    ws = indexed
    r = run_cli.json("-w", ws, "index", pool, "--detect", "retinaface", "--workers", "0",
                     "--device", "cpu")
    m = run_cli.json("-w", ws, "mine", "--index", r["run"], "--labeled", tiny_synth.labeled_toml,
                     "--threshold", "-1", "--k", "3", "--score", "max", "--device", "cpu",
                     *FIXED_CLI)
    mined = pd.read_parquet(m["dataset"])
    assert len(mined) == 1 and LabeledSet.load(m["dataset"]).table["image"][0].endswith(".png")
    ids = pd.read_parquet(ws / ".omnifer/runs" / r["run"] / "ids.parquet")
    expect = align_face(data.astronaut(), np.asarray(ids["landmarks"][0]).reshape(5, 2))
    # images in the workspace are stored relative to the table's folder
    image = Path(m["dataset"]).parent / mined["image"][0]
    assert np.array_equal(np.asarray(Image.open(image)), expect)
