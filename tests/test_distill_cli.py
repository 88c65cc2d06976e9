"""``omnifer distill`` and ``omnifer distill evaluate`` on the tiny synthetic benchmark."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from omnifer.workspace import Workspace

pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # end-to-end runs of the commands


def test_distill_defaults_to_the_latest_mine_run(mined_ws, tiny_synth, run_cli):
    from omnifer.data import LabeledSet

    ws = mined_ws
    mined = LabeledSet.load(Workspace(ws).latest("mine").output("dataset"))
    present = sorted(set(mined.table["expression"].dropna().astype(int)))
    r = run_cli.json("-w", ws, "distill", "--images-per-class", "1", "--device", "cpu")
    out = LabeledSet.load(r["dataset"])
    assert sorted(out.table["expression"].astype(int)) == present  # one per mined class
    assert set(out.sources) == {"distilled"} and all(map(os.path.isfile, out.table["image"]))
    assert os.path.getsize(r["grid"]) > 0 and r["method"] == "rded" and not r["iterations"]
    manifest = json.loads((ws / ".omnifer/runs" / r["run"] / "manifest.json").read_text())
    assert manifest["method"] == "rded" and manifest["status"] == "complete"
    assert 0 <= manifest["agreement"] <= 1
    # the trainer takes it as a source
    t = run_cli.json("-w", ws, "train", "--data", tiny_synth.labeled_toml, "--with", r["run"],
                     "--source-share", "distilled=0.5", "--backbone", "convnet", "--size", "32",
                     "--epochs", "1", "--device", "cpu", "--fresh")
    manifest = json.loads((ws / ".omnifer/runs" / t["run"] / "manifest.json").read_text())
    assert manifest["config"]["train"]["source_share"] == [["distilled", 0.5]]
    # the other sources keep their draws per epoch: the distilled images come on top
    val = set(json.loads((ws / ".omnifer/runs" / t["run"] / "split.json").read_text())[
        "val_sample_ids"])
    distilled = pd.read_parquet(r["dataset"])["sample_id"]
    others = manifest["counts"]["train"] - int((~distilled.isin(val)).sum())
    assert manifest["counts"]["draws_per_epoch"] == others * 2


def test_distill_soft_labels_from_labeled_data(mined_ws, tiny_synth, run_cli):
    r = run_cli.json("-w", mined_ws, "distill", "--from", tiny_synth.labeled_toml, "--method",
                     "gm", "--soft-labels", "--images-per-class", "1", "--iterations", "2",
                     "--size", "16", "--device", "cpu")
    table = pd.read_parquet(r["dataset"])
    soft = table[[c for c in table.columns if c.startswith("soft_")]].to_numpy()
    assert soft.shape[1] == 7 and np.allclose(soft.sum(1), 1, atol=1e-4)


def test_distill_bad_input_is_one_line(mined_ws, tiny_synth, tmp_path, run_cli):
    ws = mined_ws
    before = sorted((ws / ".omnifer/runs").glob("distill/*"))
    for args, words in ((["--images-per-class", "0"], "at least 1"),
                        (["--images-per-class", "100000"], "is more than the largest class"),
                        (["--method", "magic"], "magic"),
                        (["--images-per-class", "2", "--candidates", "1"],
                         "candidates is 1, fewer than the 2 images")):
        code, _, err = run_cli("-w", ws, "distill", *args, "--device", "cpu")
        assert code != 0 and words in err and len(err.strip().splitlines()) == 1, err
    unlabeled = tmp_path / "unlabeled.csv"
    img = next(tiny_synth.pool.rglob("*.jpg"))
    unlabeled.write_text(f"image\n{img}\n")
    code, _, err = run_cli("-w", ws, "distill", "--from", unlabeled, "--device", "cpu")
    assert code != 0 and "no expression labels" in err, err
    assert sorted((ws / ".omnifer/runs").glob("distill/*")) == before


def test_model_agreement_is_the_models_accuracy(mined_ws, tiny_synth, run_cli):
    from omnifer.data import read_labeled
    from omnifer.pipeline.teacher import agreement

    test = read_labeled(tiny_synth.test_toml)
    test = test.subset(test.masks()["expression"])
    ws = Workspace(mined_ws)
    share = agreement(ws, ws.latest("train").path, test, "cpu").mean()
    r = run_cli.json("-w", mined_ws, "evaluate", "--data", tiny_synth.test_toml, "--device", "cpu")
    assert share == pytest.approx(r["expression"]["accuracy"])
