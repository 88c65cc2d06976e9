"""``omnifer synth --label-noise``: flipped expression labels, the hidden truth file, and the
rest of the output byte-identical to a run without noise."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from omnifer.errors import OmniferError
from omnifer.labels import EXPRESSIONS
from omnifer.synth import generate
from omnifer.synth.label_noise import TRUTH_FILE, noisy_labels
from omnifer.synth.options import SynthOptions


def _hashes(root: Path) -> dict[str, str]:
    """Every file's hash; synth.json without its wall-clock timings and worker count."""
    out = {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
           for p in sorted(root.rglob("*")) if p.is_file()}
    meta = json.loads((root / "synth.json").read_text())
    for key in ("seconds", "workers"):
        meta.pop(key)
    out["synth.json"] = json.dumps(meta, sort_keys=True)
    return out


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("noise")
    clean = generate(root / "clean", preset="tiny", seed=4)
    noisy = generate(root / "noisy", preset="tiny", seed=4, label_noise=0.25)
    return clean, noisy


def test_zero_noise_is_the_default_output(pair, tmp_path):
    clean, _ = pair
    explicit = generate(tmp_path / "zero", preset="tiny", seed=4, label_noise=0.0)
    assert _hashes(explicit.out) == _hashes(clean.out)
    assert not (clean.out / TRUTH_FILE).exists() and clean.label_noise_truth is None
    assert "label_noise" not in json.loads((clean.out / "synth.json").read_text())
    assert "label_noise" not in clean.outputs


def test_noise_changes_only_the_expression_labels(pair):
    clean, noisy = pair
    a, b = _hashes(clean.out), _hashes(noisy.out)
    changed = {k for k in set(a) | set(b) if a.get(k) != b.get(k)}
    allowed = ("labeled/expr/", "labeled/multi/", "synth.json", "contact_labeled.png",
               TRUTH_FILE)
    assert changed and all(k.startswith(allowed) for k in changed), changed
    # the same images, some of them in another class folder
    images = lambda h: sorted(v for k, v in h.items() if k.startswith("labeled/expr/"))
    assert images(a) == images(b)
    assert json.loads((noisy.out / "synth.json").read_text())["label_noise"] == 0.25
    assert noisy.outputs["label_noise"] == str(noisy.out / TRUTH_FILE)


def test_truth_file_joins_the_labeled_readers_rows(pair):
    from omnifer.data import read_labeled

    clean, noisy = pair
    truth = pd.read_parquet(noisy.out / TRUTH_FILE)
    cfg = noisy.config
    n_multi_expr = noisy.details["multi_expression"]
    counts = truth["database"].value_counts().to_dict()
    assert counts.get("synth-expr", 0) == round(0.25 * cfg.n_expr)
    assert counts.get("synth-multi", 0) == round(0.25 * n_multi_expr)
    assert noisy.details["label_noise_expr"] == counts["synth-expr"]
    assert (truth["true_expression"] != truth["given_expression"]).all()
    assert (truth["given_name"] == truth["given_expression"].map(EXPRESSIONS.__getitem__)).all()
    data = read_labeled(noisy.out / "labeled.toml").table
    by_image = truth.merge(data, on="image", how="left", suffixes=("", "_read"))
    assert by_image["sample_id_read"].notna().all()
    assert (by_image["sample_id"] == by_image["sample_id_read"]).all()
    assert (by_image["given_expression"] == by_image["expression"]).all()
    assert (by_image["database"] == by_image["source"]).all()
    # every other labeled row reads as in the clean run
    before = read_labeled(clean.out / "labeled.toml").table.set_index("sample_id")
    after = data.set_index("sample_id").loc[before.index]
    differ = before["expression"].fillna(-1).to_numpy() != after["expression"].fillna(-1).to_numpy()
    assert set(before.index[differ]) == set(truth["sample_id"])
    true_read = before.loc[truth["sample_id"], "expression"].to_numpy()
    assert (true_read == truth["true_expression"].to_numpy()).all()
    # a flipped class-folder image lies in its given class's folder
    row = truth[truth["database"] == "synth-expr"].iloc[0]
    assert Path(row["image"]).parent.name == row["given_name"]


def test_noisy_labels_flip_an_exact_share_to_the_other_classes_uniformly():
    true = np.arange(7000) % 7
    given = noisy_labels(true, 0.3, seed=1, split="multi")
    flipped = given != true
    assert flipped.sum() == 2100
    offsets = np.bincount((given[flipped] - true[flipped]) % 7, minlength=7)
    assert offsets[0] == 0 and offsets[1:].min() > 280  # 350 expected each
    assert (noisy_labels(true, 0.3, seed=1, split="multi") == given).all()
    assert (noisy_labels(true, 0.3, seed=2, split="multi") != given).any()
    assert (noisy_labels(true, 0.0, seed=1, split="multi") == true).all()


def test_bad_rates_and_a_changed_rate_are_refused(pair, run_cli, tmp_path):
    _, noisy = pair
    for bad in (1.0, -0.1, float("nan"), "x"):
        with pytest.raises(OmniferError, match="label_noise is"):
            SynthOptions(label_noise=bad)
        with pytest.raises(OmniferError, match="label_noise is"):
            generate(tmp_path / "bad", preset="tiny", label_noise=bad)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(OmniferError, match="label noise"):
        generate(noisy.out, preset="tiny", seed=4, label_noise=0.1)
    with pytest.raises(OmniferError, match="label noise"):
        generate(noisy.out, preset="tiny", seed=4)
    code, out, err = run_cli("-w", tmp_path / "ws", "synth", tmp_path / "ws/data", "--preset",
                             "tiny", "--label-noise", "1.5")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "label_noise is 1.5" in err
    assert not (tmp_path / "ws/.omnifer/runs").exists()


def test_cli_records_the_truth_file(run_cli, tmp_path):
    from omnifer.pipeline import resolve
    from omnifer.records import SynthRun

    ws = tmp_path / "ws"
    r = run_cli.json("-w", ws, "synth", ws / "data", "--preset", "tiny", "--label-noise", "0.2")
    assert Path(r["label_noise"]).is_file()
    assert r["counts"]["label_noise_expr"] == round(0.2 * 28)
    rec = resolve.run(resolve.workspace(ws), r["run"], "synth")
    assert isinstance(rec, SynthRun) and rec.label_noise == Path(r["label_noise"])
    code, out, err = run_cli("-w", ws, "synth", ws / "data2", "--preset", "tiny")
    assert code == 0 and "flipped" not in out
    assert resolve.run(resolve.workspace(ws), None, "synth").label_noise is None
