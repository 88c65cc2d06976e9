"""``omnifer mine --max-uncertainty``: mined faces whose epistemic uncertainty is above a cut
are dropped, per class, with the values in the mined table and the run's manifest."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from omnifer.errors import OmniferError
from omnifer.mining.mine import MineConfig, mine
from omnifer.mining.drop import dropped_per_class, reheaded
from omnifer.mining.uncertainty_filter import filter_result, keep_mask

CLASSES = ("a", "b", "c")
ALL = ("--threshold", "-1", "--k", "3", "--score", "max", "--no-calibrate", "--ood-quantile",
       "0", "--leak-threshold", "1.0", "--device", "cpu")


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_keep_mask_drops_exactly_the_faces_above_the_cut_and_counts_them_per_class():
    values = np.array([0.0, 0.1, 0.10001, 0.5, np.nan, 1.0, 0.1], np.float32)
    labels = np.array([0, 1, 1, 2, 0, 2, 2])
    keep = keep_mask(values, 0.1)
    assert keep.tolist() == [True, True, False, False, False, False, True]
    assert dropped_per_class(labels, keep, CLASSES) == {"a": 1, "b": 1, "c": 2}
    assert keep_mask(values, 1.0).sum() == 6  # only the value that is not a number


def test_a_cluster_whose_head_is_dropped_is_led_by_its_best_kept_member():
    rows = np.array([10, 11, 12, 13, 20, 21])
    heads = np.array([-1, 10, 10, 10, -1, 20])
    keep = np.array([False, True, True, True, True, True])
    assert reheaded(rows, heads, keep).tolist() == [-1, 11, 11, -1, 20]
    assert reheaded(rows, heads, np.ones(6, bool)).tolist() == heads.tolist()


def test_filter_result_keeps_the_mined_order_and_updates_the_counts():
    rng = np.random.default_rng(0)
    centres = unit(rng.standard_normal((3, 16)))
    labels = np.repeat(np.arange(3), 30)
    labeled = unit(centres[labels] + 0.08 * rng.standard_normal((90, 16)))
    pool = unit(centres[np.repeat(np.arange(3), 60)] + 0.1 * rng.standard_normal((180, 16)))
    result = mine(pool, labeled, labels, classes=CLASSES,
                  config=MineConfig(threshold=0.5, calibrate=False, ood_quantile=0,
                                    duplicate_threshold=0.99))
    assert result.counts["mined"] > 50
    values = rng.uniform(0, 0.4, len(result.rows)).astype(np.float32)
    out, kept, record = filter_result(result, values, 0.2, classes=CLASSES, how="test")
    above = values > 0.2
    assert np.array_equal(out.rows, result.rows[~above]) and np.array_equal(kept, values[~above])
    assert np.array_equal(out.scores, result.scores[~above])
    assert out.neighbours.shape[0] == out.neighbour_scores.shape[0] == len(out.rows)
    assert record["dropped"] == out.counts["uncertainty_dropped"] == int(above.sum()) > 0
    per = {c: int((result.labels[above] == i).sum()) for i, c in enumerate(CLASSES)}
    assert record["dropped_per_class"] == per and record["max_uncertainty"] == 0.2
    assert out.counts["mined"] == len(out.rows)
    assert sum(out.counts[f"mined_{c}"] for c in CLASSES) == len(out.rows)
    heads = out.duplicate_of[out.duplicate_of >= 0]
    assert np.isin(heads, out.rows).all()  # every head is still in the mined set
    assert "uncertainty" in out.notes[-1]
    with pytest.raises(OmniferError, match="score every mined face"):
        filter_result(result, values[:-1], 0.2, classes=CLASSES, how="test")


@pytest.mark.parametrize("changes, message", [
    ({"max_uncertainty": 0.0}, "max_uncertainty is 0.0; use a value in (0, 1]"),
    ({"max_uncertainty": -0.2}, "max_uncertainty is -0.2"),
    ({"max_uncertainty": 1.5}, "max_uncertainty is 1.5"),
    ({"max_uncertainty": float("nan")}, "max_uncertainty is nan"),
    ({"mc_passes": 0}, "mc_passes is 0; use at least 1"),
    ({"mc_passes": 2.5}, "mc_passes is 2.5"),
])
def test_bad_values_are_one_line_errors(changes, message):
    with pytest.raises(OmniferError) as err:
        MineConfig(**changes)
    assert message in str(err.value) and "\n" not in str(err.value)
    MineConfig(max_uncertainty=1.0, mc_passes=1)  # the ends of the ranges are fine


# ---------------------------------------------------------------- with models and a pool

@pytest.fixture(scope="module")
def ensemble_ws(tiny_synth, tmp_path_factory, omnifer_steps):
    """A two-member ensemble (convnet, 32 px, 1 epoch) and the tiny pool indexed by member 0."""
    pytest.importorskip("torch")
    pytest.importorskip("faiss")
    return omnifer_steps(
        tmp_path_factory.mktemp("uncertain-ws"),
        ["train", "--data", tiny_synth.labeled_toml, "--backbone", "convnet", "--size", "32",
         "--epochs", "1", "--ensemble", "2", "--device", "cpu"],
        ["index", tiny_synth.pool, "--model", "train/latest@0", "--workers", "0",
         "--device", "cpu"])


def score(ws, model, passes=4):
    """Epistemic uncertainty of every face of the index of ``ws`` under ``model``."""
    from omnifer.pipeline.mine import epistemic_uncertainty, uncertainty_models
    from omnifer.pools import open_pool
    from omnifer.records import IndexRun
    from omnifer.workspace import Workspace

    wsp = Workspace(ws)
    run = IndexRun.from_run(wsp.latest("index"))
    ids = pd.read_parquet(run.ids)
    src = open_pool(run.pool, run.source, **run.source_options)
    return epistemic_uncertainty(uncertainty_models(wsp, model, "cpu"), src, ids,
                                 detected=False, config=MineConfig(device="cpu",
                                                                   mc_passes=passes))


def test_ensemble_members_and_dropout_passes_both_score_in_the_unit_interval(ensemble_ws,
                                                                             model_dir):
    from omnifer.records import TrainRun
    from omnifer.workspace import Workspace

    member = TrainRun.from_run(Workspace(ensemble_ws).latest("train")).member(0)
    values, how = score(ensemble_ws, member)  # one member: the whole run's members score
    assert how == "ensemble of 2 members" and values.shape == (60,)
    assert ((values >= 0) & (values <= 1)).all() and values.max() > 0
    again, _ = score(ensemble_ws, member)
    assert np.allclose(values, again)  # deterministic
    single, how = score(ensemble_ws, model_dir, passes=5)  # no train run: dropout passes
    assert how.startswith("Monte-Carlo dropout, 5 passes")
    assert ((single >= 0) & (single <= 1)).all() and single.max() > 0


def test_a_single_model_without_dropout_is_a_one_line_error(tmp_path):
    pytest.importorskip("torch")
    from omnifer.models import ModelConfig, build_model, save_checkpoint
    from omnifer.pipeline.mine import uncertainty_models
    from omnifer.workspace import Workspace

    save_checkpoint(build_model(ModelConfig(backbone="convnet", input_size=32, dropout=0.0),
                                seed=0), tmp_path / "m")
    with pytest.raises(OmniferError) as err:
        uncertainty_models(Workspace(tmp_path / "ws"), tmp_path / "m", "cpu")
    assert "has no dropout" in str(err.value) and "\n" not in str(err.value)


def test_cli_max_uncertainty_mines_a_recorded_subset(ensemble_ws, tiny_synth, tmp_path,
                                                     run_cli):
    from omnifer.records import TrainRun
    from omnifer.workspace import Workspace

    ws = ensemble_ws
    base = ["-w", ws, "mine", "--labeled", tiny_synth.labeled_toml, *ALL]
    full = run_cli.json(*base)
    assert full["counts"]["mined"] == 60 and full["uncertainty"] is None
    member = TrainRun.from_run(Workspace(ws).latest("train")).member(0)
    values, _ = score(ws, member)
    cut = float(np.median(values))
    r = run_cli.json(*base, "--max-uncertainty", cut)
    table = pd.read_parquet(r["dataset"])
    whole = pd.read_parquet(full["dataset"])
    assert set(table["key"]) < set(whole["key"]) and len(table) == r["counts"]["mined"]
    assert (table["epistemic"] <= cut).all() and "epistemic" not in whole.columns
    labels = whole.set_index("key")["label"]
    dropped = labels.drop(table["key"])
    manifest = json.loads((ws / ".omnifer/runs" / r["run"] / "manifest.json").read_text())
    rec = manifest["uncertainty"]
    assert rec["max_uncertainty"] == cut and rec["dropped"] == len(dropped) > 0
    assert rec["dropped_per_class"] == {c: int((dropped == c).sum())
                                        for c in rec["dropped_per_class"]}
    assert manifest["config"]["mine"]["max_uncertainty"] == cut
    assert any("uncertainty" in line for line in manifest["summary"])
    # a copy of the member outside the run is a single model: Monte-Carlo dropout
    copy = tmp_path / "single"
    shutil.copytree(member, copy)
    r = run_cli.json(*base, "--model", copy, "--max-uncertainty", "1", "--mc-passes", "3")
    assert r["uncertainty"]["scored_with"].startswith("Monte-Carlo dropout, 3 passes")
    assert r["counts"]["mined"] == 60  # nothing is above 1
    before = sorted((ws / ".omnifer/runs").glob("mine/*"))
    for flags, message in ((["--max-uncertainty", "0"], "max_uncertainty is 0.0"),
                           (["--max-uncertainty", "1.01"], "max_uncertainty is 1.01"),
                           (["--max-uncertainty", "0.1", "--mc-passes", "0"], "mc_passes is 0")):
        code, out, err = run_cli(*base, *flags)
        assert code != 0 and message in err and len(err.strip().splitlines()) == 1
    assert sorted((ws / ".omnifer/runs").glob("mine/*")) == before
