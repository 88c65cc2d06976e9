"""Mining: selection, caps, leak guard, threshold calibration, index search, the mined dataset
and the ``omnifer mine`` command."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from omnifer.errors import OmniferError
from omnifer.mining.engine import evidence, select
from omnifer.mining.mine import (
    MIN_SUPPORT,
    Calibration,
    MineConfig,
    check_classes,
    class_thresholds,
    mine,
)

CLASSES = ("a", "b", "c")


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
    cfg = MineConfig(threshold=0.9, margin=0.02, min_votes=3)
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
    full = mine(pool, labeled, labels, classes=CLASSES, config=MineConfig(threshold=0.85))
    per = np.bincount(full.labels, minlength=3)
    capped = mine(pool, labeled, labels, classes=CLASSES,
                  config=MineConfig(threshold=0.85, per_class_max=5))
    assert list(np.bincount(capped.labels, minlength=3)) == list(np.minimum(per, 5))
    for c in range(3):  # the best-scored ones stay
        assert np.allclose(capped.scores[capped.labels == c], full.scores[full.labels == c][:5])
    bal = mine(pool, labeled, labels, classes=CLASSES,
               config=MineConfig(threshold=0.85, balance=1.5))
    assert bal.counts["capped"] == full.counts["mined"] - bal.counts["mined"]
    assert np.bincount(bal.labels, minlength=3).max() <= int(1.5 * per.min())
    # evaluation images copied into the pool (slightly changed) are never mined
    leaked = full.rows[:7]
    test = unit(pool[leaked].astype(np.float32) + 1e-3)
    guarded = mine(pool, labeled, labels, classes=CLASSES, config=MineConfig(threshold=0.85),
                   exclude=test)
    assert not np.isin(leaked, guarded.rows).any()
    assert guarded.counts["leak_excluded"] == 7 and guarded.counts["leak_near_duplicates"] >= 7
    assert guarded.counts["mined"] == full.counts["mined"] - 7


def test_class_thresholds_reach_the_target_on_enough_faces():
    # class 0: the 12 best are right, then wrong ones; class 1 never reaches 0.9
    n0 = 20
    score0 = np.linspace(0.99, 0.80, n0)
    truth0 = np.array([0] * 12 + [1, 0, 1, 1, 1, 1, 1, 1])
    score1 = np.linspace(0.98, 0.85, 30)
    truth1 = np.where(np.arange(30) % 3 == 0, 0, 1)  # two thirds right
    cal = Calibration(truth=np.concatenate([truth0, truth1]),
                      best=np.array([0] * n0 + [1] * 30),
                      score=np.concatenate([score0, score1]), eligible=np.ones(n0 + 30, bool))
    t = class_thresholds(cal, 0.9, 3, floor=None)
    # top 14 of class 0: 13 right of 14 = 0.929 >= 0.9; top 15: 13/15 = 0.867
    assert t[0] == pytest.approx(score0[13]) and 14 >= MIN_SUPPORT
    assert np.isinf(t[1]) and np.isinf(t[2])
    assert class_thresholds(cal, 0.9, 3, floor=0.95)[0] == pytest.approx(0.95)
    est = cal.estimate(t)
    assert est["per_class"][0] == {"kept": 14, "precision": pytest.approx(13 / 14)}
    assert est["kept"] == 14 and est["coverage"] == pytest.approx(14 / 50)


def test_target_precision_estimate_is_close_to_the_truth():
    rng = np.random.default_rng(1)
    centres = unit(rng.standard_normal((3, 16)))
    labeled, labels = clusters(200, 0.35, rng, centres)
    pool, truth = clusters(300, 0.35, rng, centres)
    r = mine(pool.astype(np.float16), labeled, labels, classes=CLASSES,
             config=MineConfig(threshold=None, target_precision=0.95))
    assert np.isfinite(r.thresholds).all() and r.estimate["precision"] >= 0.95
    true = (r.labels == truth[r.rows]).mean()
    assert abs(true - r.estimate["precision"]) < 0.04 and len(r.rows) > 100


def test_index_search_equals_exact_on_a_flat_index_and_reports_recall(data):
    faiss_index = pytest.importorskip("omnifer.pools.faiss_index")
    pytest.importorskip("faiss")
    pool, labeled, labels, _ = data
    cfg = MineConfig(threshold=0.85, search="index")
    exact = mine(pool, labeled, labels, classes=CLASSES, config=MineConfig(threshold=0.85))
    flat = faiss_index.build_index(pool.astype(np.float32), factory="Flat", device="cpu")
    via = mine(pool, labeled, labels, classes=CLASSES, config=cfg, index=flat)
    assert via.search == "index" and np.array_equal(via.rows, exact.rows)
    assert via.recall["recall"] == 1.0
    proto = MineConfig(threshold=0.85, prototypes=True)
    exact_p = mine(pool, labeled, labels, classes=CLASSES, config=proto)
    via_p = mine(pool, labeled, labels, classes=CLASSES, index=flat,
                 config=MineConfig(threshold=0.85, prototypes=True, search="index"))
    assert len(exact_p.rows) > 30 and np.array_equal(via_p.rows, exact_p.rows)
    ivf = faiss_index.build_index(pool.astype(np.float32), factory="IVF8,Flat", device="cpu")
    ivf.nprobe = 1
    approx = mine(pool, labeled, labels, classes=CLASSES, config=MineConfig(threshold=0.85),
                  index=ivf, approximate=True)
    hit = np.isin(exact.rows, approx.rows).mean()
    assert approx.search == "index" and 0 < approx.recall["recall"] <= 1
    assert approx.recall["recall"] == pytest.approx(hit)  # the sample is the whole pool here


def test_bad_input_gives_one_line_errors(data):
    pool, labeled, labels, _ = data
    for kw in ({"threshold": 1.5}, {"threshold": -2}, {"k": 0}, {"score": "median"},
               {"threshold": None}, {"target_precision": 1.5}, {"balance": 0.5}):
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
              tiny_synth.test_toml, "--leak-threshold", "1.0", "--device", "cpu"]
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
    for name in ("report.md", "histograms.png", "precision_coverage.png"):
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
                     "--score", "max", "--leak-threshold", "1.0", "--device", "cpu")
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
                     "--threshold", "0.2", "--k", "3", "--score", "max", "--device", "cpu")
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
                     "--threshold", "-1", "--k", "3", "--score", "max", "--device", "cpu")
    mined = pd.read_parquet(m["dataset"])
    assert len(mined) == 1 and LabeledSet.load(m["dataset"]).table["image"][0].endswith(".png")
    ids = pd.read_parquet(ws / ".omnifer/runs" / r["run"] / "ids.parquet")
    expect = align_face(data.astronaut(), np.asarray(ids["landmarks"][0]).reshape(5, 2))
    # images in the workspace are stored relative to the table's folder
    image = Path(m["dataset"]).parent / mined["image"][0]
    assert np.array_equal(np.asarray(Image.open(image)), expect)
