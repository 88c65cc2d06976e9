"""Tests of the synthetic FER benchmark generator (tiny preset, small images)."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from omnifer.errors import OmniferError
from omnifer.labels import EXPRESSIONS
from omnifer.synth import AUS, PRESETS, generate, make_identities, resolve_config, sample_faces
from omnifer.synth.faces import AU_INDEX, ExpressionParams, sample_expression_labels
from omnifer.synth.sampling import sample_rows
from omnifer.synth.render import RenderParams, render_face


def _hash_tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _hash_tree_without_timings(root: Path) -> dict[str, str]:
    """All files; synth.json compared without its wall-clock timings."""
    out = _hash_tree(root)
    meta = json.loads((root / "synth.json").read_text())
    meta.pop("seconds")
    meta.pop("workers")
    out["synth.json"] = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "tiny"
    return generate(out, preset="tiny", seed=0)


def test_same_seed_byte_identical_different_seed_differs(tiny, tmp_path):
    again = generate(tmp_path / "again", preset="tiny", seed=0)
    other = generate(tmp_path / "other", preset="tiny", seed=1)
    a, b = _hash_tree_without_timings(tiny.out), _hash_tree_without_timings(again.out)
    assert a.keys() == b.keys()
    assert a == b
    c = _hash_tree_without_timings(other.out)
    images = [k for k in a if k.endswith(".jpg")]
    assert images and sum(a[k] != c.get(k) for k in images) > 0.9 * len(images)
    assert a["pool_truth.parquet"] != c["pool_truth.parquet"]


def test_worker_count_does_not_change_output(tmp_path):
    cfg = dict(preset="tiny", seed=3, n_pool=40, n_test=10)
    one = generate(tmp_path / "one", workers=1, **cfg)
    two = generate(tmp_path / "two", workers=2, **cfg)
    assert _hash_tree_without_timings(one.out) == _hash_tree_without_timings(two.out)


def test_layout_and_counts(tiny):
    import datasets

    out, cfg = tiny.out, tiny.config
    for name in ("synth.json", "labeled.toml", "test.toml", "pool_truth.parquet",
                 "contact_labeled.png", "contact_pool.png", "contact_test.png"):
        assert (out / name).is_file(), name
    assert not (out / ".synth-partial.json").exists()
    meta = json.loads((out / "synth.json").read_text())
    assert meta["seed"] == 0 and meta["preset"] == "tiny" and meta["config"]["size"] == 48
    # Class folders (all canonical names), balanced.
    per_class = {c: len(list((out / "labeled/expr" / c).glob("*.jpg"))) for c in EXPRESSIONS}
    assert sum(per_class.values()) == cfg.n_expr
    assert max(per_class.values()) - min(per_class.values()) <= 1
    va = pd.read_csv(out / "labeled/va/labels.csv")
    assert list(va.columns) == ["image", "valence", "arousal"] and len(va) == cfg.n_va
    assert all((out / "labeled/va" / f).is_file() for f in va.image)
    au = pd.read_parquet(out / "labeled/au/labels.parquet")
    assert len(au) == cfg.n_au and "expression" not in au.columns and "valence" not in au.columns
    assert set(AUS) <= set(au.columns) and {f"{a}_intensity" for a in AUS} <= set(au.columns)
    assert all((out / "labeled/au" / f).is_file() for f in au.image)
    ds = datasets.load_from_disk(str(out / "labeled/multi"))
    assert len(ds) == cfg.n_multi
    assert isinstance(ds.features["image"], datasets.Image)
    assert list(ds.features["expression"].names) == list(EXPRESSIONS)
    img = ds[0]["image"]
    assert img.size == (cfg.size, cfg.size)
    df = ds.remove_columns("image").to_pandas()
    has = np.stack([df.expression.notna(), df.valence.notna(), df.AU12.notna()], 1)
    assert has.any(axis=1).all()
    assert (df.valence.notna() == df.arousal.notna()).all()
    test = pd.read_parquet(out / "test/labels.parquet")
    assert len(test) == cfg.n_test and set(test.expression) <= set(EXPRESSIONS)
    assert test[["valence", "arousal"] + list(AUS)].notna().all().all()
    assert all((out / "test" / f).is_file() for f in test.image)
    assert len(list((out / "pool").rglob("*.jpg"))) == cfg.n_pool
    for sub in (out / "pool").iterdir():
        assert len(list(sub.iterdir())) <= cfg.pool_folder_size
    # TOML files point at existing databases, paths relative to the toml.
    lab = tomllib.loads((out / "labeled.toml").read_text())
    names = {db["name"]: db for db in lab["database"]}
    assert set(names) == {"synth-expr", "synth-va", "synth-au", "synth-multi"}
    assert names["synth-va"]["tasks"] == ["va"] and names["synth-au"]["format"] == "parquet"
    for db in lab["database"] + tomllib.loads((out / "test.toml").read_text())["database"]:
        assert (out / db["path"]).exists(), db
    counts, details = tiny.counts, tiny.details
    assert counts == {"expr": cfg.n_expr, "va": cfg.n_va, "au": cfg.n_au, "multi": cfg.n_multi,
                      "test": cfg.n_test, "pool": cfg.n_pool}
    assert tiny.total == sum(counts.values())
    assert cfg.n_pool == sum(details[f"pool_{k}"] for k in ("face", "nonface", "occluded", "blend"))
    assert details["multi_expression"] == df.expression.notna().sum()
    assert details["multi_all_tasks"] == has.all(axis=1).sum()
    assert meta["counts"] == counts and meta["details"] == details


def test_pool_truth_outside_pool_and_names_leak_nothing(tiny):
    out = tiny.out
    assert not list((out / "pool").rglob("*.parquet")) and not list((out / "pool").rglob("*.json"))
    truth = pd.read_parquet(out / "pool_truth.parquet")
    assert len(truth) == tiny.config.n_pool
    pool_files = sorted(p.relative_to(out / "pool").as_posix() for p in (out / "pool").rglob("*.jpg"))
    assert sorted(truth.file) == pool_files
    assert all(re.fullmatch(r"\d{5}/\d{6}\.jpg", f) for f in pool_files)
    words = set(EXPRESSIONS) | {"face", "nonface", "occluded", "blend"}
    assert not any(w in f for f in pool_files for w in words)
    assert set(truth.kind) <= {"face", "nonface", "occluded", "blend"}
    nonface = truth.kind == "nonface"
    assert truth.loc[nonface, "expression"].isna().all()
    assert truth.loc[~nonface, "expression"].notna().all()
    blend = truth.kind == "blend"
    assert truth.loc[blend, "expression2"].notna().all() and truth.loc[~blend, "expression2"].isna().all()
    assert (truth.loc[blend, "blend"] >= 0.5).all()
    assert set(truth.domain) == {"source"}


def test_au_binary_matches_intensity_threshold(tiny):
    thr = tiny.config.au_threshold
    for path in ("labeled/au/labels.parquet", "test/labels.parquet", "pool_truth.parquet"):
        df = pd.read_parquet(tiny.out / path)
        for a in AUS:
            ok = df[a].notna()
            assert ((df.loc[ok, f"{a}_intensity"] >= thr).astype(int) == df.loc[ok, a]).all(), (path, a)


def test_valence_arousal_range_and_class_structure(tiny):
    rng = np.random.default_rng(0)
    classes = np.repeat(np.arange(7), 400)
    lab = sample_expression_labels(rng, classes, ExpressionParams())
    v, a = lab["valence"], lab["arousal"]
    assert (np.abs(v) <= 1).all() and (np.abs(a) <= 1).all()
    idx = {c: i for i, c in enumerate(EXPRESSIONS)}
    mean_v = {c: v[classes == i].mean() for c, i in idx.items()}
    mean_a = {c: a[classes == i].mean() for c, i in idx.items()}
    assert mean_v["happiness"] > 0.3 > mean_v["neutral"] > -0.3 > mean_v["sadness"]
    assert mean_a["surprise"] > mean_a["neutral"] > mean_a["sadness"]
    assert mean_v["anger"] < 0 and mean_a["anger"] > 0
    # Prototype AUs are active for their class.
    au = lab["au"]
    assert au[classes == idx["happiness"], AU_INDEX["AU12"]].mean() > 0.5
    assert au[classes == idx["neutral"], AU_INDEX["AU12"]].mean() < 0.1
    test = pd.read_parquet(tiny.out / "test/labels.parquet")
    assert test.valence.between(-1, 1).all() and test.arousal.between(-1, 1).all()


def test_distractor_rates_roughly_as_configured():
    cfg = resolve_config("tiny", pool_nonface_rate=0.2, pool_occluded_rate=0.1, pool_blend_rate=0.15)
    ids = make_identities(10, np.random.default_rng(0))
    rows = sample_rows(np.random.default_rng(1), 20000, cfg, "pool", 0, ids, shifted=False)
    rates = np.bincount(rows["kind"], minlength=4) / 20000
    assert rates[1:] == pytest.approx([0.2, 0.1, 0.15], abs=0.015)
    faces = rows["kind"] != 1
    freq = np.bincount(rows["expression"][faces], minlength=7) / faces.sum()
    p = np.asarray(cfg.pool_class_probs) / sum(cfg.pool_class_probs)
    assert freq == pytest.approx(p, abs=0.02)


def test_bad_preset_and_overrides_raise(tmp_path):
    with pytest.raises(OmniferError, match="tiny, small, demo, scale, large"):
        generate(tmp_path / "x", preset="huge")
    with pytest.raises(OmniferError, match="unknown synth config field.*n_pool"):
        generate(tmp_path / "x", preset="tiny", n_pools=3)
    with pytest.raises(OmniferError, match="n_pool"):
        resolve_config("tiny", n_pool=-1)
    with pytest.raises(OmniferError, match="not a valid int"):
        resolve_config("tiny", n_pool="many")
    with pytest.raises(OmniferError, match="add up"):
        resolve_config("tiny", pool_nonface_rate=0.6, pool_blend_rate=0.6)
    assert set(PRESETS) == {"tiny", "small", "demo", "scale", "large"}
    assert resolve_config("tiny", n_pool="7").n_pool == 7


def test_refuses_foreign_non_empty_output(tiny, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(OmniferError, match="not empty"):
        generate(busy, preset="tiny")
    with pytest.raises(OmniferError, match="different config or seed"):
        generate(tiny.out, preset="tiny", seed=5)
    # Same config and seed may overwrite (byte-identical).
    before = _hash_tree_without_timings(tiny.out)
    generate(tiny.out, preset="tiny", seed=0)
    assert _hash_tree_without_timings(tiny.out) == before


def test_domain_shift_marks_pool(tmp_path):
    res = generate(tmp_path / "shift", preset="tiny", domain_shift=True, n_pool=12, n_test=7)
    truth = pd.read_parquet(res.pool_truth)
    assert set(truth.domain) == {"shifted"} and res.config.domain_shift


def test_sample_faces_in_memory():
    cfg = resolve_config("tiny")
    x1, lab1 = sample_faces(14, np.random.default_rng(7), config=cfg, size=32)
    x2, lab2 = sample_faces(14, np.random.default_rng(7), config=cfg, size=32)
    assert x1.shape == (14, 32, 32, 3) and x1.dtype == np.uint8
    assert np.array_equal(x1, x2) and np.array_equal(lab1["expression"], lab2["expression"])
    assert lab1["au"].shape == (14, len(AUS))
    assert np.array_equal(lab1["au_binary"], (lab1["au"] >= cfg.au_threshold).astype(np.int8))


_CLEAN = RenderParams(roll_deg=0, yaw=0, scale_jitter=0, shift=0, light_strength=0, noise_max=0,
                      blur_max=0, occlusion_prob=0, background_clutter=0)
# Regions as (y0, y1, x0, x1) fractions of the image for the canonical, unposed face.
_REGIONS = {"brow": (0.30, 0.45, 0.22, 0.78), "eye": (0.44, 0.60, 0.22, 0.78),
            "nose": (0.46, 0.66, 0.40, 0.60), "mouth": (0.64, 0.86, 0.25, 0.75)}
_WHERE = {"AU1": ("brow", "mouth"), "AU2": ("brow", "mouth"), "AU4": ("brow", "mouth"),
          "AU5": ("eye", "mouth"), "AU6": ("eye", "brow"), "AU7": ("eye", "mouth"),
          "AU9": ("nose", "mouth"), "AU10": ("mouth", "brow"), "AU12": ("mouth", "brow"),
          "AU15": ("mouth", "brow"), "AU20": ("mouth", "brow"), "AU23": ("mouth", "brow"),
          "AU26": ("mouth", "brow")}


@pytest.mark.parametrize("au", list(AUS))
def test_each_au_moves_its_region(au):
    assert set(_WHERE) == set(AUS)
    size = 96
    ident = make_identities(6, np.random.default_rng(11))
    more, less = _WHERE[au]
    for k in range(len(ident)):
        zero = np.zeros(len(AUS))
        on = zero.copy()
        on[AU_INDEX[au]] = 1.0
        a = np.asarray(render_face(np.random.default_rng(k), ident[k], zero, size, _CLEAN,
                                   occlusion="none"), dtype=np.float32)
        b = np.asarray(render_face(np.random.default_rng(k), ident[k], on, size, _CLEAN,
                                   occlusion="none"), dtype=np.float32)
        diff = np.abs(a - b).mean(axis=2)

        def region(name):
            y0, y1, x0, x1 = (int(round(v * size)) for v in _REGIONS[name])
            return diff[y0:y1, x0:x1].mean()

        assert region(more) > 0.5, (au, k, region(more))
        assert region(more) > 2 * region(less), (au, k, region(more), region(less))
