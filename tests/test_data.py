"""Readers, the sample table, bad-row policies and TOML mixtures.

Every fixture is a handful of tiny images written with Pillow into ``tmp_path``.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from omnifer.artifacts import content_id
from omnifer.data import (
    READERS,
    BadFile,
    LabeledSet,
    combine,
    infer_format,
    load_image,
    read_labeled,
    read_spec,
)
from omnifer.errors import OmniferError
from omnifer.labels import EXPRESSIONS, EXPRESSIONS_WITH_CONTEMPT

E = {name: i for i, name in enumerate(EXPRESSIONS_WITH_CONTEMPT)}


# ---------------------------------------------------------------- fixtures

def image_bytes(seed: int, *, fmt: str = "JPEG", size: int = 24, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    im = Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def write_image(path: Path, seed: int, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".png": "PNG", ".bmp": "BMP", ".webp": "WEBP"}.get(path.suffix.lower(), "JPEG")
    path.write_bytes(image_bytes(seed, fmt=fmt, **kw))
    return path


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture
def folder_db(tmp_path: Path) -> Path:
    root = tmp_path / "expr"
    write_image(root / "happy" / "a.jpg", 1)
    write_image(root / "happy" / "deeper" / "b.JPEG", 2)  # recursive, upper-case suffix
    write_image(root / "Sadness" / "c.png", 3)
    write_image(root / "neutral" / "d.bmp", 4)
    write_image(root / "neutral" / "e.webp", 5)
    (root / "neutral" / "notes.txt").write_text("not an image")
    (root / "neutral" / ".hidden.jpg").write_bytes(b"ignored")
    return root


@pytest.fixture
def csv_db(tmp_path: Path) -> Path:
    root = tmp_path / "va"
    for i in range(5):
        write_image(root / "images" / f"{i}.jpg", 10 + i)
    return write_csv(root / "labels.csv", "image,expression,valence,arousal,AU12,au1", [
        "images/0.jpg,happy,0.5,0.25,1,",
        "images/1.jpg,,,,0,1",
        "images/2.jpg,Sad,-1,1,,",
        "images/3.jpg,angry,,,,",
        f"{root / 'images' / '4.jpg'},,0,0,,0",  # absolute path
    ])


def save_hf(root: Path, tmp_path: Path) -> Path:
    from datasets import ClassLabel, Dataset, Features, Value
    from datasets import Image as HFImage

    src = write_image(tmp_path / "hf_src" / "by_path.png", 33)
    data = {
        "image": [{"bytes": image_bytes(30), "path": None},
                  {"bytes": image_bytes(31), "path": None},
                  {"bytes": image_bytes(32), "path": None},
                  {"bytes": None, "path": str(src)}],
        "label": [1, None, 3, 0],
        "valence": [0.5, None, -0.25, None],
        "arousal": [0.1, None, 0.75, None],
        "AU4": [1, None, 0, 1],
    }
    features = Features({
        "image": HFImage(),
        "label": ClassLabel(names=["angry", "happy", "sad", "contempt"]),
        "valence": Value("float32"),
        "arousal": Value("float32"),
        "AU4": Value("int8"),
    })
    Dataset.from_dict(data, features=features).save_to_disk(str(root))
    return root


# ---------------------------------------------------------------- folder

def test_folder_reader(folder_db: Path):
    calls = []
    s = read_labeled(folder_db, progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, 5) and calls[-1] == (5, 5)
    assert len(s) == 5 and s.bad == () and s.sources == ("expr",)
    assert s.expressions == EXPRESSIONS and s.aus == ()
    t = s.table
    assert list(t.columns) == ["sample_id", "image", "source", "expression", "valence",
                               "arousal", "weight"]
    by_file = {Path(p).name: int(e) for p, e in zip(t["image"], t["expression"])}
    assert by_file == {"a.jpg": E["happiness"], "b.JPEG": E["happiness"], "c.png": E["sadness"],
                       "d.bmp": E["neutral"], "e.webp": E["neutral"]}
    for ref, sid in zip(t["image"], t["sample_id"]):
        assert os.path.isabs(ref) and sid == content_id(Path(ref).read_bytes())
    m = s.masks()
    assert m["expression"].all() and not m["va"].any() and m["au"].shape == (5, 0)
    assert str(t["expression"].dtype) == "Int16" and t["valence"].dtype == np.float32
    assert s.counts() == {"expr": {"samples": 5, "expression": 5, "va": 0, "au": 0, "bad": 0}}


def test_folder_unknown_class_lists_known_names(tmp_path: Path):
    write_image(tmp_path / "db" / "happy" / "a.jpg", 1)
    write_image(tmp_path / "db" / "smirk" / "b.jpg", 2)
    with pytest.raises(OmniferError) as err:
        read_labeled(tmp_path / "db", format="folder")
    msg = str(err.value)
    assert "'smirk'" in msg and "happiness" in msg and "neutral" in msg and "\n" not in msg


def test_folder_contempt_extends_the_vocabulary(tmp_path: Path):
    write_image(tmp_path / "db" / "contempt" / "a.jpg", 1)
    write_image(tmp_path / "db" / "happy" / "b.jpg", 2)
    s = read_labeled(tmp_path / "db")
    assert s.expressions == EXPRESSIONS_WITH_CONTEMPT
    assert sorted(s.table["expression"].tolist()) == [E["happiness"], E["contempt"]]


def test_folder_numbered_classes_need_label_order(tmp_path: Path):
    write_image(tmp_path / "raf" / "4" / "a.jpg", 1)
    write_image(tmp_path / "raf" / "7" / "b.jpg", 2)
    with pytest.raises(OmniferError, match="label_order"):
        read_labeled(tmp_path / "raf", format="folder")
    s = read_labeled(tmp_path / "raf", label_order="rafdb")
    assert sorted(s.table["expression"].tolist()) == [E["neutral"], E["happiness"]]


# ---------------------------------------------------------------- csv / parquet

def test_csv_reader_partial_labels(csv_db: Path):
    s = read_labeled(csv_db)
    assert s.sources == ("va",)  # generic file name -> folder name
    assert s.aus == ("AU1", "AU12")
    assert list(s.table.columns)[6:] == ["AU1", "AU12", "weight"]
    t = s.table
    assert t["expression"].tolist()[:1] == [E["happiness"]]
    assert t["expression"].isna().tolist() == [False, True, False, False, True]
    np.testing.assert_allclose(t["valence"], [0.5, np.nan, -1, np.nan, 0])
    np.testing.assert_allclose(t["arousal"], [0.25, np.nan, 1, np.nan, 0])
    m = s.masks()
    assert m["va"].tolist() == [True, False, True, False, True]
    assert m["au"].tolist() == [[False, True], [True, True], [False, False], [False, False],
                                [True, False]]
    a = s.arrays()
    assert a["expression"].tolist() == [E["happiness"], 0, E["sadness"], E["anger"], 0]
    assert a["au"].tolist() == [[0, 1], [1, 0], [0, 0], [0, 0], [0, 0]]
    assert not np.isnan(a["va"]).any() and a["va"].shape == (5, 2)
    assert a["va_mask"].dtype == bool and a["au_mask"].shape == (5, 2)
    assert s.counts()["va"] == {"samples": 5, "expression": 3, "va": 3, "au": 3, "bad": 0}
    assert s.counts(per_au=True)["va"] == {"samples": 5, "expression": 3, "va": 3, "au": 3,
                                           "bad": 0, "AU1": 2, "AU12": 2}


def test_integer_expressions_need_label_order(tmp_path: Path):
    write_image(tmp_path / "db" / "a.jpg", 1)
    write_image(tmp_path / "db" / "b.jpg", 2)
    write_image(tmp_path / "db" / "c.jpg", 3)
    csv = write_csv(tmp_path / "db" / "affectnet.csv", "image,expression",
                    ["a.jpg,1", "b.jpg,8", "c.jpg,6"])
    with pytest.raises(OmniferError, match="label_order"):
        read_labeled(csv)
    s = read_labeled(csv, label_order="affectnet")
    assert s.sources == ("affectnet",)
    assert s.table["expression"].isna().tolist() == [False, True, False]  # 8 = none -> missing
    assert s.table["expression"].tolist()[0] == E["happiness"]
    assert s.table["expression"].tolist()[2] == E["anger"]
    s = read_labeled(csv, label_order="rafdb", on_bad_files="skip")  # 8 is not a RAF-DB label
    assert len(s) == 2 and "not in the rafdb label order" in s.bad[0].reason


def test_parquet_reader_rename_and_tasks(tmp_path: Path):
    root = tmp_path / "au"
    for i in range(3):
        write_image(root / "images" / f"{i}.jpg", 40 + i)
    df = pd.DataFrame({
        "file": [f"images/{i}.jpg" for i in range(3)],
        "emo": [3.0, np.nan, 0.0],  # fer2013: happy, missing, angry
        "valence": [0.1, np.nan, 0.2],
        "arousal": [0.3, np.nan, 0.4],
        "AU6": [1.0, np.nan, 0.0],
        "AU25": [0.0, 1.0, np.nan],
        "split": ["a", "b", "c"],  # ignored
    })
    path = root / "labels.parquet"
    df.to_parquet(path)
    s = read_labeled(path, columns={"image": "file", "expression": "emo"},
                     label_order="fer2013", weight=0.5)
    assert s.aus == ("AU6", "AU25")
    assert s.table["expression"].tolist()[0] == E["happiness"]
    assert s.table["expression"].isna().tolist() == [False, True, False]
    assert s.table["weight"].tolist() == [0.5] * 3
    assert s.masks()["au"].tolist() == [[True, True], [False, True], [True, False]]

    only_au = read_labeled(path, columns={"image": "file", "expression": "emo"},
                           label_order="fer2013", tasks=["au"])
    assert only_au.table["expression"].isna().all()
    assert not only_au.masks()["va"].any() and only_au.aus == ("AU6", "AU25")
    only_expr = read_labeled(path, columns={"image": "file", "expression": "emo"},
                             label_order="fer2013", tasks="expression")
    assert only_expr.aus == () and only_expr.masks()["expression"].sum() == 2

    with pytest.raises(OmniferError, match="no image column"):
        read_labeled(path)
    with pytest.raises(OmniferError, match="unknown task"):
        read_labeled(path, columns={"image": "file"}, tasks=["landmarks"])
    with pytest.raises(OmniferError, match="columns are"):
        read_labeled(path, columns={"image": "filename"})


# ---------------------------------------------------------------- hf

def test_hf_reader_classlabel_and_none(tmp_path: Path):
    root = save_hf(tmp_path / "multi", tmp_path)
    assert infer_format(root) == "hf"
    s = read_labeled(root)
    assert len(s) == 4 and s.bad == ()
    assert s.expressions == EXPRESSIONS_WITH_CONTEMPT  # the ClassLabel has contempt
    t = s.table
    assert t["expression"].isna().tolist() == [False, True, False, False]
    assert [t["expression"][i] for i in (0, 2, 3)] == [E["happiness"], E["contempt"], E["anger"]]
    assert s.masks()["va"].tolist() == [True, False, True, False]
    np.testing.assert_allclose(t["valence"][[0, 2]], [0.5, -0.25])
    assert s.aus == ("AU4",) and s.masks()["au"][:, 0].tolist() == [True, False, True, True]
    assert t["image"][2] == f"{os.path.abspath(root)}::2"
    assert t["sample_id"][0] == content_id(image_bytes(30))
    assert t["sample_id"][3] == content_id((tmp_path / "hf_src" / "by_path.png").read_bytes())
    im = load_image(t["image"][1])
    assert im.mode == "RGB" and im.size == (24, 24)
    assert np.array_equal(np.asarray(im), np.asarray(Image.open(io.BytesIO(image_bytes(31)))))


# ---------------------------------------------------------------- bad rows

@pytest.fixture
def messy_csv(tmp_path: Path) -> Path:
    root = tmp_path / "messy"
    write_image(root / "good0.jpg", 1)
    write_image(root / "good1.jpg", 2)
    for seed, name in enumerate(("range.jpg", "text.jpg", "unknown.jpg", "half.jpg", "au.jpg")):
        write_image(root / name, 100 + seed)
    (root / "corrupt.jpg").write_bytes(b"this is not an image at all")
    full = image_bytes(7, size=64)
    (root / "truncated.jpg").write_bytes(full[: len(full) // 2])
    return write_csv(root / "messy.csv", "image,expression,valence,arousal,AU1", [
        "good0.jpg,happy,0.1,0.2,1",
        "missing.jpg,happy,,,",
        "corrupt.jpg,sad,,,",
        "truncated.jpg,sad,,,",
        "range.jpg,,1.5,0.2,",
        "text.jpg,,high,0.2,",
        "unknown.jpg,smirk,,,",
        "half.jpg,,0.3,,",
        "au.jpg,,,,3",
        "good1.jpg,neutral,,,",
    ])


BAD_ROWS = {1: "not found", 2: "cannot decode", 3: "truncated", 4: "outside [-1, 1]",
            5: "not a number", 6: "unknown expression", 7: "without arousal", 8: "not 0 or 1"}


def test_bad_rows_skip(messy_csv: Path):
    s = read_labeled(messy_csv, on_bad_files="skip")
    assert len(s) == 2 and len(s.bad) == len(BAD_ROWS)
    assert [Path(p).name for p in s.table["image"]] == ["good0.jpg", "good1.jpg"]
    for bad, (row, words) in zip(s.bad, sorted(BAD_ROWS.items())):
        assert isinstance(bad, BadFile) and bad.row == row and bad.source == "messy"
        assert words in bad.reason, (bad, words)
        assert "\n" not in str(bad)
    assert s.counts()["messy"]["bad"] == len(BAD_ROWS)


def test_bad_rows_warn(messy_csv: Path, caplog):
    with caplog.at_level(logging.WARNING, logger="omnifer"):
        s = read_labeled(messy_csv, on_bad_files="warn")
    assert len(s) == 2 and len(s.bad) == len(BAD_ROWS)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(BAD_ROWS)
    assert any("missing.jpg" in w.getMessage() for w in warnings)
    assert any("range.jpg" in w.getMessage() for w in warnings)


def test_bad_rows_error_is_one_line(messy_csv: Path):
    with pytest.raises(OmniferError) as err:
        read_labeled(messy_csv)  # error is the default
    msg = str(err.value)
    assert "\n" not in msg
    assert "messy.csv row" in msg and "on_bad_files='skip'" in msg


@pytest.mark.parametrize(("content", "words"), [
    (b"garbage", "cannot decode"), (b"", "empty"), (None, "truncated")])
def test_bad_image_in_folder_names_the_file(tmp_path: Path, content, words):
    write_image(tmp_path / "db" / "happy" / "ok.jpg", 1)
    bad = tmp_path / "db" / "happy" / "bad.jpg"
    if content is None:
        full = image_bytes(2, size=64)
        content = full[: len(full) // 2]
    bad.write_bytes(content)
    with pytest.raises(OmniferError) as err:
        read_labeled(tmp_path / "db")
    assert str(bad) in str(err.value) and words in str(err.value)
    s = read_labeled(tmp_path / "db", on_bad_files="skip")
    assert len(s) == 1 and s.bad[0].path == str(bad) and s.bad[0].row is None


def test_unknown_policy_and_format(csv_db: Path):
    with pytest.raises(OmniferError, match="error, warn, skip"):
        read_labeled(csv_db, on_bad_files="ignore")
    with pytest.raises(OmniferError) as err:
        read_labeled(csv_db, format="xlsx")
    for name in READERS:
        assert name in str(err.value)
    with pytest.raises(OmniferError, match="does not exist"):
        read_labeled(csv_db.parent / "nope.csv")


def test_format_inference(tmp_path: Path, folder_db: Path, csv_db: Path):
    assert infer_format(folder_db) == "folder"
    assert infer_format(csv_db) == "csv"
    assert infer_format(csv_db.parent) == "csv"  # a folder with one manifest (+ images/)
    assert read_labeled(csv_db.parent).sources == ("va",)
    with pytest.raises(OmniferError, match="cannot tell what"):
        read_labeled(tmp_path)  # expr/ and va/ are not expression names
    pd.DataFrame({"image": [{"bytes": b"x", "path": None}]}).to_parquet(tmp_path / "e.parquet")
    with pytest.raises(OmniferError, match=r"e\.parquet::0: cannot decode image"):
        read_labeled(tmp_path / "e.parquet")  # embedded images are read (the Hub layout)


def test_valence_column_without_arousal_column(tmp_path: Path):
    write_image(tmp_path / "a.jpg", 1)
    csv = write_csv(tmp_path / "v.csv", "image,valence", ["a.jpg,0.5"])
    with pytest.raises(OmniferError, match="no arousal column"):
        read_labeled(csv)


# ---------------------------------------------------------------- TOML mixtures

def test_toml_spec_four_formats(tmp_path: Path, folder_db: Path, csv_db: Path):
    au_dir = tmp_path / "au"
    for i in range(2):
        write_image(au_dir / "images" / f"{i}.jpg", 50 + i)
    pd.DataFrame({"image": ["images/0.jpg", "images/1.jpg"], "AU2": [1, 0],
                  "AU12": [0, 1]}).to_parquet(au_dir / "labels.parquet")
    save_hf(tmp_path / "multi", tmp_path)
    spec = tmp_path / "labeled.toml"
    spec.write_text(
        'on_bad_files = "skip"\n'
        '[[database]]\nname = "expr"\npath = "expr"\nformat = "folder"\n'
        '[[database]]\nname = "va_only"\npath = "va/labels.csv"\ntasks = ["va"]\nweight = 2.0\n'
        '[[database]]\nname = "aus"\npath = "au/labels.parquet"\nformat = "parquet"\n'
        '[[database]]\nname = "multi"\npath = "multi"\n'
        'columns = { expression = "label" }\n'
    )
    assert infer_format(spec) == "toml"
    s = read_labeled(spec)
    assert s.sources == ("expr", "va_only", "aus", "multi")
    assert s.aus == ("AU2", "AU4", "AU12")  # union, sorted by number; va_only keeps no AUs
    assert s.expressions == EXPRESSIONS_WITH_CONTEMPT
    assert len(s) == 5 + 5 + 2 + 4
    c = s.counts(per_au=True)
    assert c["expr"]["expression"] == 5 and c["expr"]["va"] == 0 and c["expr"]["au"] == 0
    assert c["va_only"] == {"samples": 5, "expression": 0, "va": 3, "au": 0, "bad": 0,
                            "AU2": 0, "AU4": 0, "AU12": 0}
    assert c["aus"]["AU2"] == 2 and c["aus"]["AU4"] == 0 and c["aus"]["expression"] == 0
    assert c["multi"]["expression"] == 3 and c["multi"]["va"] == 2 and c["multi"]["AU4"] == 3
    t = s.table
    assert t.loc[t["source"] == "va_only", "weight"].tolist() == [2.0] * 5
    assert t.loc[t["source"] == "expr", list(s.aus)].isna().all().all()
    m = s.masks()
    assert m["au"].shape == (16, 3) and m["au"][(t["source"] == "aus").to_numpy()].sum() == 4
    assert read_spec(spec).counts(per_au=True) == c


def test_toml_unknown_keys_and_names(tmp_path: Path, folder_db: Path):
    spec = tmp_path / "bad.toml"
    spec.write_text('[[database]]\npath = "expr"\nlabels = "x"\n')
    with pytest.raises(OmniferError) as err:
        read_spec(spec)
    msg = str(err.value)
    assert "labels" in msg and "label_order" in msg and "columns" in msg and "\n" not in msg

    spec.write_text('databases = []\n')
    with pytest.raises(OmniferError, match="valid keys are database, on_bad_files"):
        read_spec(spec)
    spec.write_text('[[database]]\npath = "expr"\n[[database]]\npath = "expr"\n')
    with pytest.raises(OmniferError, match="reuses the database name 'expr'"):
        read_spec(spec)
    spec.write_text('[[database]]\npath = "expr"\nweight = "heavy"\n')
    with pytest.raises(OmniferError, match="weight"):
        read_spec(spec)
    spec.write_text('[[database]\npath = "expr"\n')
    with pytest.raises(OmniferError, match="not valid TOML"):
        read_spec(spec)


def test_toml_policy_override(tmp_path: Path, messy_csv: Path):
    spec = tmp_path / "m.toml"
    spec.write_text(f'on_bad_files = "skip"\n[[database]]\npath = "{messy_csv.name}"\n')
    spec = spec.rename(messy_csv.parent / "m.toml")
    assert len(read_spec(spec)) == 2
    with pytest.raises(OmniferError, match="on_bad_files"):
        read_spec(spec, on_bad_files="error")


# ---------------------------------------------------------------- the table

def test_parquet_round_trip_keeps_vocabularies(tmp_path: Path, folder_db: Path,
                                               messy_csv: Path):
    s = combine([read_labeled(messy_csv, on_bad_files="skip"), save_and_read_hf(tmp_path)])
    out = s.save(tmp_path / "set.parquet")
    back = LabeledSet.load(out)
    assert back.expressions == s.expressions == EXPRESSIONS_WITH_CONTEMPT
    assert back.aus == s.aus == ("AU1", "AU4")
    assert back.sources == s.sources and back.bad == s.bad and len(back.bad) == len(BAD_ROWS)
    pd.testing.assert_frame_equal(back.table, s.table)
    for key, value in s.arrays().items():
        np.testing.assert_array_equal(back.arrays()[key], value)
    df = pd.read_parquet(out)
    df.to_parquet(tmp_path / "plain.parquet")
    with pytest.raises(OmniferError, match="not a saved LabeledSet"):
        LabeledSet.load(tmp_path / "plain.parquet")


def save_and_read_hf(tmp_path: Path) -> LabeledSet:
    return read_labeled(save_hf(tmp_path / "multi", tmp_path),
                        columns={"expression": "label"}, name="multi")


def test_combine_subset_and_table_checks(folder_db: Path, csv_db: Path):
    a, b = read_labeled(folder_db), read_labeled(csv_db, name="manifest")
    s = combine([a, b])
    assert s.sources == ("expr", "manifest") and len(s) == 10 and s.aus == ("AU1", "AU12")
    assert s.table[list(s.aus)].iloc[:5].isna().all().all()
    sub = s.subset(np.arange(10) >= 5)
    assert len(sub) == 5 and sub.aus == s.aus and sub.sources == s.sources
    pd.testing.assert_frame_equal(sub.table, b.table)
    assert len(s.subset([0, 2])) == 2 and len(s.subset(slice(0, 3))) == 3
    with pytest.raises(OmniferError):
        combine([])
    with pytest.raises(OmniferError, match="expected"):
        LabeledSet(table=s.table.drop(columns=["weight"]), aus=s.aus)


def test_import_does_not_load_torch():
    code = "import sys, omnifer.data; print('torch' in sys.modules, 'datasets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------- images

def test_load_image_exif_gray_rgba(tmp_path: Path):
    arr = np.zeros((10, 20, 3), dtype=np.uint8)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    im.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").size == (10, 20)
    Image.new("L", (8, 8), 128).save(tmp_path / "gray.png")
    gray = load_image(tmp_path / "gray.png")
    assert gray.mode == "RGB" and gray.getpixel((0, 0)) == (128, 128, 128)
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    assert load_image(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(OmniferError, match="does not exist"):
        load_image(tmp_path / "gone.jpg")

