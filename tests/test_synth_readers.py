"""The readers on the synthetic benchmark: each database carries exactly its tasks."""

import numpy as np
import pandas as pd

from omnifer.data import read_labeled


def test_each_synth_database_has_the_right_masks(tiny_synth):
    ds = read_labeled(tiny_synth.outputs["labeled"])
    assert ds.bad == ()
    masks = ds.masks()
    src = ds.table["source"].to_numpy()
    expected = {"synth-expr": (True, False, False), "synth-va": (False, True, False),
                "synth-au": (False, False, True)}
    for name, (has_e, has_va, has_au) in expected.items():
        rows = src == name
        assert rows.sum() > 0, name
        assert (masks["expression"][rows] == has_e).all(), name
        assert (masks["va"][rows] == has_va).all(), name
        assert (masks["au"][rows].all(axis=1) == has_au).all(), name
        assert (masks["au"][rows].any(axis=1) == has_au).all(), name
    multi = src == "synth-multi"
    # the multi database carries each task on a part of its rows, all three on some
    for task in ("expression", "va"):
        assert 0 < masks[task][multi].sum() < multi.sum()
    all_three = masks["expression"] & masks["va"] & masks["au"].all(axis=1)
    assert 0 < all_three[multi].sum() < multi.sum()
    # no NaN reaches the arrays a loss reads
    arrays = ds.arrays()
    assert np.isfinite(arrays["va"]).all() and np.isfinite(arrays["au"]).all()
    assert set(ds.aus) >= {"AU1", "AU2", "AU4", "AU5", "AU6", "AU7", "AU9", "AU12", "AU15",
                           "AU20", "AU23", "AU26"}


def test_test_set_has_every_label_and_matches_files(tiny_synth):
    ds = read_labeled(tiny_synth.outputs["test"])
    m = ds.masks()
    assert m["expression"].all() and m["va"].all() and m["au"].all()
    truth = pd.read_parquet(tiny_synth.out / "test" / "labels.parquet")
    assert len(ds) == len(truth)
    by_name = dict(zip(truth["image"].map(lambda p: p.split("/")[-1]), truth["valence"]))
    got = dict(zip(ds.table["image"].map(lambda p: p.split("/")[-1]), ds.table["valence"]))
    assert all(abs(got[k] - by_name[k]) < 1e-3 for k in by_name)


def test_class_folder_labels_follow_folder_names(tiny_synth):
    ds = read_labeled(tiny_synth.out / "labeled" / "expr")
    folders = ds.table["image"].map(lambda p: p.split("/")[-2])
    names = ds.table["expression"].map(lambda i: ds.expressions[int(i)])
    assert (folders == names).all()
