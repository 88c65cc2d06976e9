"""The label audit: label issues from cross-fitted neighbours, near duplicates across databases
and train/test, outliers, and the ``omnifer audit`` command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from omnifer.errors import OmniferError
from omnifer.mining.audit import (AuditConfig, audit, check_labels, label_scores,
                                  suspects)
from omnifer.mining.leaks import HASH_BYTES, nearest_rows

C = 4


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def faces():
    """Four well-separated classes, 50 faces each, in two databases; 12 labels flipped."""
    rng = np.random.default_rng(0)
    centres = unit(rng.standard_normal((C, 24)))
    truth = np.repeat(np.arange(C), 50)
    emb = unit(centres[truth] + 0.08 * rng.standard_normal((len(truth), 24)))
    given = truth.copy()
    flipped = rng.choice(len(truth), 12, replace=False)
    given[flipped] = (truth[flipped] + rng.integers(1, C, 12)) % C
    db = np.where(np.arange(len(truth)) % 2 == 0, "a", "b")
    return emb, truth, given, flipped, db, centres, rng


CFG = AuditConfig(k=5, device="cpu", hash_distance=None)


def test_planted_label_flips_are_flagged(faces):
    emb, truth, given, flipped, db, _, _ = faces
    r = audit(emb, given, db, n_classes=C, config=CFG)
    assert set(np.flatnonzero(r.label_issue)) == set(flipped)
    assert (r.suggested[flipped] == truth[flipped]).all()
    assert (r.label_score[flipped] > CFG.label_cut).all()
    assert np.nanmax(r.label_score[~r.label_issue]) < 0
    gap = r.evidence_of(r.suggested) - r.evidence_of(r.given)
    assert np.allclose(gap[flipped], r.label_score[flipped], atol=1e-6)
    assert r.counts["label_issues"] == 12 and r.counts["scored"] == len(emb)
    # the clean labels flag nothing; the confidence score ranks the flips first too
    assert not audit(emb, truth, db, n_classes=C, config=CFG).label_issue.any()
    conf = audit(emb, given, db, n_classes=C,
                 config=CFG.replace(score="vote", label_score="confidence", label_cut=0.5))
    top = np.argsort(-conf.label_score)[:12]
    assert set(top) == set(flipped)


def test_label_scores_by_hand():
    scores = np.array([[0.6, 0.2, 0.2, 0.0], [0.1, -0.3, 0.3, 0.0]])
    best, margin = label_scores(scores, np.array([1, 2]), kind="margin")
    assert list(best) == [0, 2]
    assert np.allclose(margin, [0.6 - 0.2, 0.1 - 0.3])
    _, conf = label_scores(scores, np.array([1, 2]), kind="confidence")
    assert np.allclose(conf, [1 - 0.2, 1 - 0.75])
    _, conf = label_scores(np.full((1, 4), -0.5), np.array([0]), kind="confidence")
    assert np.allclose(conf, 0.75)  # no positive evidence: every class has a quarter
    with pytest.raises(OmniferError, match="label_score is 'x'"):
        label_scores(scores, np.array([1, 2]), kind="x")


def test_planted_duplicates_across_databases_and_test_are_found(faces):
    emb, truth, given, _, db, centres, rng = faces
    emb = emb.copy()
    emb[3] = unit(emb[9] + 0.01 * rng.standard_normal(24)[None])[0]  # 3 and 9 in b: same db
    emb[5] = unit(emb[10] + 0.01 * rng.standard_normal(24)[None])[0]  # 5 in b, 10 in a
    test = unit(centres[rng.integers(0, C, 20)] + 0.08 * rng.standard_normal((20, 24)))
    test[7] = emb[20]
    mirrored = unit(rng.standard_normal((20, 24)))
    mirrored[2] = emb[30]  # the mirror image of test face 2 is labeled face 30
    r = audit(emb, given, db, n_classes=C, config=CFG, test=np.concatenate([test, mirrored]))
    assert set(np.flatnonzero(r.duplicates.found)) == {5, 10}
    assert r.duplicates.of[5] == 10 and r.duplicates.of[10] == 5
    assert r.duplicates.cosine[5] > 0.98
    assert set(np.flatnonzero(r.test_duplicates.found)) == {20, 30}
    assert r.test_duplicates.of[20] == 7 and r.test_duplicates.of[30] == 22
    assert r.counts["duplicates"] == 2 and r.counts["test_duplicates"] == 2


def test_hash_only_copies_are_duplicates(faces):
    emb, _, given, _, db, _, rng = faces
    hashes = rng.integers(0, 256, (len(emb), HASH_BYTES), dtype=np.uint8)
    test_hashes = rng.integers(0, 256, (5, HASH_BYTES), dtype=np.uint8)
    hashes[11] = hashes[40]
    hashes[11, :4] ^= 0xFF  # 32 bits apart; 11 in b, 40 in a
    test_hashes[3] = hashes[60]
    bits, at = nearest_rows(hashes[[11]], hashes)
    assert at[0] == 11 and bits[0] == 0
    cfg = CFG.replace(hash_distance=40)
    test = unit(rng.standard_normal((5, 24)))
    r = audit(emb, given, db, n_classes=C, config=cfg, test=test, hashes=hashes,
              test_hashes=test_hashes)
    assert r.duplicates.of[11] == 40 and r.duplicates.bits[11] == 32
    assert r.test_duplicates.of[60] == 3 and r.test_duplicates.bits[60] == 0
    strict = audit(emb, given, db, n_classes=C, config=cfg.replace(hash_distance=16),
                   hashes=hashes)
    assert not strict.duplicates.found[11]


def test_outliers_and_unlabeled_rows(faces):
    emb, _, given, _, db, _, rng = faces
    far = unit(rng.standard_normal((2, 24)))
    emb2 = np.concatenate([emb, far])
    given2 = np.concatenate([given, [-1, 2]])
    r = audit(emb2, given2, np.concatenate([db, ["c", "c"]]), n_classes=C,
              config=CFG.replace(outlier_quantile=0.01))
    assert r.outlier[-2:].all() and r.outlier.sum() <= 3
    assert r.given[-2] == -1 and r.suggested[-2] == -1 and np.isnan(r.label_score[-2])
    assert np.isnan(r.evidence_of(r.given)[-2]) and r.fold[-2] == -1
    assert r.counts["scored"] == len(emb) + 1 and np.isfinite(r.kth_similarity).all()
    none = audit(emb2, given2, np.concatenate([db, ["c", "c"]]), n_classes=C,
                 config=CFG.replace(outlier_quantile=0.0))
    assert not none.outlier.any()
    picked = suspects(r, 40)
    assert set(picked["outlier"]) == {200, 201} and len(picked["label"]) == r.label_issue.sum()
    few = suspects(r, 8)
    assert len(few["outlier"]) == 1 and len(few["label"]) == 7
    assert sum(len(v) for v in suspects(r, 0).values()) == 0


def test_bad_config_and_labels_are_one_line_errors():
    for kw, msg in (({"k": 0}, "k is 0"), ({"folds": 1}, "folds is 1"),
                    ({"label_score": "x"}, "label_score is 'x'"),
                    ({"label_cut": 2.0}, "label_cut is 2.0"),
                    ({"duplicate_threshold": 1.5}, "duplicate_threshold is 1.5"),
                    ({"outlier_quantile": 1.0}, "outlier_quantile is 1.0"),
                    ({"hash_distance": 1000}, "hash_distance is 1000"),
                    ({"suspects": -1}, "suspects is -1"), ({"score": "sum"}, "score is 'sum'"),
                    ({"device": "gpu"}, "unknown device")):
        with pytest.raises(OmniferError, match=msg):
            AuditConfig(**kw)
    with pytest.raises(OmniferError, match="no face with an expression label"):
        check_labels(np.full(10, -1), 7, AuditConfig())
    with pytest.raises(OmniferError, match="k is 20 but a cross-fitting fold leaves"):
        check_labels(np.arange(12) % 3, 3, AuditConfig())


# ---------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def audit_ws(tmp_path_factory):
    """A workspace with a tiny noisy synth run, a planted cross-database copy and a planted
    test image among the labeled faces."""
    from PIL import Image

    from omnifer import pipeline

    root = tmp_path_factory.mktemp("audit") / "ws"
    s = pipeline.synth(root, pipeline.SynthOptions(preset="tiny", size=48, label_noise=0.2),
                       out=root / "data")
    data = Path(s.out)
    test_image = sorted((data / "test/images").glob("*.jpg"))[0]
    shutil.copy(test_image, data / "labeled/expr/happiness/planted_test.jpg")
    va = sorted((data / "labeled/va/images").glob("*.jpg"))[0]
    Image.open(va).save(data / "labeled/expr/anger/planted_va.jpg", quality=90)
    return {"root": root, "data": data, "test_image": test_image, "va": va}


def _runs(root):
    return sorted((root / ".omnifer/runs").glob("audit/*"))


@pytest.mark.slow
def test_cli_audit_writes_the_table_sheet_and_report(audit_ws, model_dir, run_cli):
    from omnifer.records import AuditRun
    from omnifer.workspace import Workspace

    root = audit_ws["root"]
    r = run_cli.json("-w", root, "audit", "--model", model_dir, "--k", "3", "--device", "cpu",
                     "--label-cut", "-1")
    table = pd.read_parquet(r["table"])
    assert len(table) == 28 + 16 + 16 + 20 + 2 and table["sample_id"].is_unique
    for col in ("sample_id", "image", "source", "given", "suggested", "label_score",
                "label_issue", "outlier_score", "outlier", "duplicate_of", "test_duplicate_of",
                "test_duplicate_mirrored"):
        assert col in table.columns, col
    assert pd.read_csv(r["csv"]).shape == table.shape
    # the planted copies (an exact test image, a re-encoded face of another database)
    planted = table[table["image"].str.endswith("planted_test.jpg")].iloc[0]
    assert planted["test_duplicate"] and planted["test_duplicate_image"] == str(
        audit_ws["test_image"].resolve())
    copy = table[table["image"].str.endswith("planted_va.jpg")].iloc[0]
    assert copy["duplicate"] and copy["duplicate_image"] == str(audit_ws["va"].resolve())
    assert r["counts"]["test_duplicates"] >= 1 and r["counts"]["duplicates"] >= 2
    # rows without an expression label carry no label verdict
    va = table[table["source"] == "synth-va"]
    assert va["given"].isna().all() and va["label_score"].isna().all()
    assert not va["label_issue"].any()
    assert Path(r["sheet"]).stat().st_size > 0 and "# Label audit" in Path(
        r["report"]).read_text()
    rec = AuditRun.from_run(Workspace(root).resolve(r["run"], "audit"))
    assert rec.config.k == 3 and rec.counts == r["counts"] and rec.summary
    code, out, err = run_cli("-w", root, "audit", "--model", model_dir, "--k", "3",
                             "--device", "cpu", "--no-test")
    assert code == 0 and "0 of evaluation faces" in out and "next: omnifer" in out
    status = run_cli.json("-w", root, "status")
    assert any(row["run"].startswith("audit/") for row in status["runs"])


def test_cli_audit_refuses_bad_input_without_writing(audit_ws, model_dir, run_cli, tmp_path):
    root = audit_ws["root"]
    before = _runs(root)
    base = ["-w", root, "audit", "--device", "cpu"]
    cases = [
        (["--model", model_dir, "--data", audit_ws["data"] / "labeled/va/labels.csv"],
         "no face with an expression label"),
        (["--model", tmp_path], "no model at"),
        (["--model", "train/nope"], "train"),
        (["--model", model_dir, "--label-cut", "3"], "label_cut is 3.0"),
        (["--model", model_dir, "--outlier-quantile", "1"], "outlier_quantile is 1.0"),
        (["--model", model_dir, "--k", "500"], "k is 500 but a cross-fitting fold leaves"),
    ]
    bad = tmp_path / "audit.toml"
    bad.write_text("[audit]\nfolds = 1\n")
    cases.append((["--model", model_dir, "--config", bad], "folds is 1"))
    bad2 = tmp_path / "audit2.toml"
    bad2.write_text("[audit]\nthreshold = 0.5\n")
    cases.append((["--model", model_dir, "--config", bad2], "unknown audit option"))
    for flags, message in cases:
        code, out, err = run_cli(*base, *flags)
        assert code == 1 and message in err, (flags, err)
        assert len(err.strip().splitlines()) == 1, err
    assert _runs(root) == before


def test_audit_config_round_trips_through_toml(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text("[audit]\nk = 7\nlabel_score = 'confidence'\nhash_distance = 64\n")
    cfg = AuditConfig.from_toml(path).replace(k=None, label_cut=0.4)
    assert (cfg.k, cfg.label_score, cfg.hash_distance, cfg.label_cut) == (7, "confidence", 64, 0.4)
    assert AuditConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
