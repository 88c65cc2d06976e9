"""Inputs that must be caught early or handled safely: edited copies of test images in a pool
(the leak guard's perceptual hash), options refused before a run directory exists, label-order
typos, and repeated images in labeled data."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnifer.data import LabeledSet, combine, read_labeled
from omnifer.data.table import make_table
from omnifer.errors import OmniferError
from omnifer.mining import MineConfig, check_classes, mine
from omnifer.mining.leaks import HASH_BYTES, image_hash, image_hashes, nearest
from omnifer.train import split_validation

DISTANCE = MineConfig().leak_hash_distance


def photo(seed: int, size: int = 96) -> np.ndarray:
    """A photo-like image: detail at every scale (octaves of noise), no two seeds alike."""
    rng = np.random.default_rng(seed)
    x = np.zeros((size, size, 3), np.float32)
    for side in (6, 12, 24, 48, 96):
        octave = rng.standard_normal((side, side, 3)).astype(np.float32)
        up = [np.asarray(Image.fromarray(octave[..., c], "F").resize((size, size), Image.BICUBIC))
              for c in range(3)]
        x += np.stack(up, axis=2) * 6 / side
    return np.clip(128 + 40 * x, 0, 255).astype(np.uint8)


def jpeg(image: np.ndarray, quality: int = 95) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


# ---------------------------------------------------------------- leak guard: hashes

def test_perceptual_hash_matches_edited_copies_and_mirrors_only():
    originals = [photo(s) for s in range(20)]
    reference = image_hashes(originals, mirrored=True)
    assert reference.shape == (40, HASH_BYTES) and reference.dtype == np.uint8
    for x in originals[:5]:
        edits = [jpeg(np.ascontiguousarray(x[:, ::-1])),
                 jpeg(np.clip(x.astype(np.float32) * 1.15, 0, 255).astype(np.uint8)),
                 jpeg(x, 60),
                 jpeg(np.asarray(Image.fromarray(x).resize((72, 72), Image.LANCZOS)))]
        assert (nearest(np.stack([image_hash(e) for e in edits]), reference) <= DISTANCE).all()
    others = np.stack([image_hash(photo(s)) for s in range(100, 140)])
    assert (nearest(others, reference) > DISTANCE).all()
    assert (nearest(others, reference[:0]) > HASH_BYTES * 8).all()  # no reference: no match


def test_mine_drops_pool_faces_whose_hash_matches_and_asks_only_for_mined_rows():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((2, 16))
    labels = np.repeat([0, 1], 30)
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    labeled = unit(centres[labels] + 0.05 * rng.standard_normal((60, 16)))
    pool = unit(centres[np.repeat([0, 1], 20)] + 0.05 * rng.standard_normal((40, 16)))
    hashes = np.stack([image_hash(photo(s)) for s in range(40)])
    asked = []

    def pool_hashes(rows):
        asked.append(np.asarray(rows))
        return hashes[rows]

    config = MineConfig(threshold=0.9)
    plain = mine(pool, labeled, labels, classes=("a", "b"), config=config)
    copies = [3, 25]  # their hashes stand for edited copies of two evaluation images
    guarded = mine(pool, labeled, labels, classes=("a", "b"), config=config,
                   exclude_hashes=hashes[copies], pool_hashes=pool_hashes)
    assert set(copies) <= set(plain.rows) and not set(copies) & set(guarded.rows)
    assert guarded.counts["leak_excluded_hash"] == 2 == guarded.counts["leak_excluded"]
    assert len(guarded.rows) == len(plain.rows) - 2
    assert len(asked) == 1 and set(asked[0]) == set(plain.rows)  # only rows that would be mined
    off = mine(pool, labeled, labels, classes=("a", "b"), exclude_hashes=hashes[copies],
               pool_hashes=pool_hashes, config=MineConfig(threshold=0.9, leak_hash_distance=None))
    assert len(off.rows) == len(plain.rows)


# ---------------------------------------------------------------- options, before any run

@pytest.mark.parametrize("options", [{"balance": float("nan")}, {"balance": float("inf")},
                                     {"margin": float("inf")}, {"leak_hash_distance": 600}])
def test_mine_config_refuses_non_finite_and_out_of_range_values(options):
    with pytest.raises(OmniferError) as err:
        MineConfig(**options)
    name = next(iter(options))
    assert str(err.value).startswith(f"{name} is ") and "\n" not in str(err.value)


def test_k_larger_than_the_labeled_set_is_refused_with_the_largest_usable_k():
    labels = np.repeat([0, 1, 2], 10)  # 2 of each class held out: 24 faces left
    check_classes(labels, ("a", "b", "c"), MineConfig(k=24))
    with pytest.raises(OmniferError, match=r"k is 25 .* use --k 24 or less"):
        check_classes(labels, ("a", "b", "c"), MineConfig(k=25))


@pytest.mark.parametrize("flags", [["--size", "0"], ["--size", "1"], ["--iterations", "0"],
                                   ["--iterations", "-5"], ["--lr-images", "nan"],
                                   ["--width", "0"], ["--batch-real", "0"]])
def test_distill_refuses_bad_options_before_a_run_exists(tmp_path, run_cli, flags):
    code, out, err = run_cli("-w", tmp_path, "distill", *flags)
    name = flags[0][2:].replace("-", "_")
    assert code != 0 and f"{name} is {flags[1]}" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / ".omnifer" / "runs").exists()


@pytest.mark.parametrize("flags", [["--balance", "nan"], ["--balance", "inf"]])
def test_mine_refuses_non_finite_options_before_a_run_exists(tmp_path, run_cli, flags):
    code, out, err = run_cli("-w", tmp_path, "mine", *flags)
    assert code != 0 and f"balance is {flags[1]}; use a finite number" in err
    assert not (tmp_path / ".omnifer" / "runs").exists()


# ---------------------------------------------------------------- labeled data

def write_images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i}.jpg"
        Image.fromarray(photo(i, 24)).save(path, "JPEG")
        paths.append(path)
    return paths


def test_label_order_typo_names_the_expression_and_never_drops_rows(tmp_path):
    write_images(tmp_path / "db", 2)
    (tmp_path / "db" / "labels.csv").write_text("image,expression\n0.jpg,0\n1.jpg,1\n")
    spec = tmp_path / "data.toml"
    spec.write_text('on_bad_files = "skip"\n[[database]]\npath = "db/labels.csv"\n'
                    'label_order = {0 = "neutral", 1 = "joyous"}\n')
    for policy in ("skip", "error"):
        with pytest.raises(OmniferError, match="unknown expression 'joyous'") as err:
            read_labeled(spec, on_bad_files=policy)
        assert "\n" not in str(err.value)
    with pytest.raises(OmniferError, match="unknown expression 'joyous'"):
        read_labeled(tmp_path / "db" / "labels.csv", label_order={0: "neutral", 1: "joyous"},
                     on_bad_files="skip")
    ok = read_labeled(tmp_path / "db" / "labels.csv", label_order={0: "neutral", 1: "joy"})
    assert len(ok) == 2


def test_repeated_images_are_read_once_with_one_warning(tmp_path, caplog):
    write_images(tmp_path / "db", 3)
    (tmp_path / "db" / "copy.jpg").write_bytes((tmp_path / "db" / "0.jpg").read_bytes())
    (tmp_path / "db" / "labels.csv").write_text(
        "image,expression\n0.jpg,happy\n1.jpg,sad\n0.jpg,happy\ncopy.jpg,angry\n2.jpg,fear\n"
        "1.jpg,sad\n")
    with caplog.at_level(logging.WARNING):
        s = read_labeled(tmp_path / "db" / "labels.csv")
    assert len(s) == 3 and s.table["sample_id"].is_unique
    assert s.table["image"].map(lambda p: Path(p).name).tolist() == ["0.jpg", "1.jpg", "2.jpg"]
    assert s.table["expression"].tolist()[0] == s.expressions.index("happiness")  # first kept
    lines = [r.getMessage() for r in caplog.records if "repeat an image" in r.getMessage()]
    assert len(lines) == 1 and "3 rows" in lines[0] and "2 with the same labels" in lines[0]
    assert "1 with different labels" in lines[0] and "copy.jpg" in lines[0]


def labeled_set(sample_ids: list[str], source: str) -> LabeledSet:
    n = len(sample_ids)
    nan = np.full(n, np.nan, np.float32)
    table = make_table(sample_id=sample_ids, image=[f"{source}/{s}.jpg" for s in sample_ids],
                       source=source, expression=np.arange(n) % 7, valence=nan, arousal=nan,
                       au={}, weight=1.0)
    return LabeledSet(table=table, sources=(source,))


def test_split_validation_keeps_every_row_of_an_image_on_one_side():
    ids = [f"img{i}" for i in range(40)]
    data = combine([labeled_set(ids + ids[:10], "a"), labeled_set(ids[5:25], "b")])
    for seed in range(5):
        train, val = split_validation(data, 0.25, seed)
        sid = data.table["sample_id"].to_numpy()
        assert not set(sid[train]) & set(sid[val])
        assert len(train) + len(val) == len(data) and len(val) > 0
    unique = labeled_set(ids, "a")  # without repeats the split is the plain per-source one
    rows = np.random.default_rng(3).permutation(40)[:10]
    assert np.array_equal(split_validation(unique, 0.25, 3)[1], np.sort(rows))
