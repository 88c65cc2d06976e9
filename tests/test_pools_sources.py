"""Pool sources: every format written small into ``tmp_path`` and read back by key."""

from __future__ import annotations

import base64
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnifer.errors import OmniferError
from omnifer.pools import (
    DETECTION_ORDER,
    IMAGE_EXTENSIONS,
    POOL_SOURCES,
    PoolItem,
    detect_source,
    item_id,
    open_pool,
    write_recordio,
)
from omnifer.pools.recordio import MAGIC, MAGIC_BYTES, pack_payload, read_index
from omnifer.pools.source import detection_order

LABELS = [0.0, 0.0, 1.0, 1.0, 2.0]


def image_bytes(seed: int, fmt: str = "JPEG", size: int = 16) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    return [image_bytes(i, "PNG" if i % 2 else "JPEG") for i in range(5)]


def read_all(source, keys=None) -> list[PoolItem]:
    items = list(source.read(source.keys() if keys is None else keys))
    assert [it.key for it in items] == list(source.keys() if keys is None else keys)
    return items


def check_roundtrip(source, originals: list[bytes]) -> None:
    """All bytes equal the originals; a reversed subset comes back in its own order."""
    keys = source.keys()
    items = read_all(source)
    assert [it.error for it in items] == [None] * len(originals)
    assert [it.data for it in items] == originals
    subset = [keys[3], keys[0], keys[2]]
    assert [it.data for it in source.read(subset)] == [originals[3], originals[0], originals[2]]
    clone = pickle.loads(pickle.dumps(source))
    assert [it.data for it in clone.read(subset[::-1])] == [originals[2], originals[0],
                                                            originals[3]]
    assert source.describe() == {"name": source.name, "path": str(source.path),
                                 "options": source.options, "count": len(originals)}


def one_line_error(fn, *words: str) -> str:
    with pytest.raises(OmniferError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg
    return msg


# ====================================================================== recordio

def test_recordio_faces_emore_layout(tmp_path, images):
    rec, idx = write_recordio(tmp_path / "train", images, LABELS)
    assert detect_source(tmp_path) == "recordio" == detect_source(rec) == detect_source(idx)
    pairs = read_index(idx)
    assert [i for i, _ in pairs] == list(range(1 + 5 + 3))  # meta, images, 3 identities
    source = open_pool(tmp_path)
    assert source.keys() == [f"rec:{i}" for i in range(1, 6)]
    check_roundtrip(source, images)
    assert list(source.read(["rec:0", "rec:7", "x"]))[1].error  # meta and identity: no image


def test_recordio_without_meta(tmp_path, images):
    write_recordio(tmp_path / "pool", images, LABELS, with_meta=False)
    source = open_pool(tmp_path / "pool.rec")
    assert source.keys() == [f"rec:{i}" for i in range(5)]
    check_roundtrip(source, images)


def test_recordio_record_split_in_chunks_by_hand(tmp_path, images):
    # One record written as three chunks (cflag 1, 2, 3), as dmlc-core does when the payload
    # holds the magic number at aligned offsets: the magic numbers were dropped at the cuts
    # and the reader must put them back.
    image = images[0]
    parts = [pack_payload(image[:8], 3.0), image[8:20], image[20:]]
    chunks = b""
    for cflag, part in zip((1, 2, 3), parts):
        chunks += struct.pack("<II", MAGIC, (cflag << 29) | len(part)) + part
        chunks += b"\0" * (-len(part) % 4)
    whole = pack_payload(images[1], 4.0)
    first = struct.pack("<II", MAGIC, len(whole)) + whole + b"\0" * (-len(whole) % 4)
    (tmp_path / "x.rec").write_bytes(first + chunks)
    (tmp_path / "x.idx").write_text(f"0\t0\n1\t{len(first)}\n")
    items = list(open_pool(tmp_path / "x.rec").read(["rec:1", "rec:0"]))
    expected = image[:8] + MAGIC_BYTES + image[8:20] + MAGIC_BYTES + image[20:]
    assert [it.data for it in items] == [expected, images[1]]


def test_recordio_writer_splits_at_aligned_magic(tmp_path, images):
    # Payload offset 24 + 8 is 4-aligned: the writer must split there, and only there.
    odd = images[2][:8] + MAGIC_BYTES + images[2][8:]
    rec, _ = write_recordio(tmp_path / "s", [images[0], odd], [0.0, 1.0], with_meta=False)
    raw = rec.read_bytes()
    flags, pos = [], 0
    while pos < len(raw):
        magic, lrec = struct.unpack_from("<II", raw, pos)
        assert magic == MAGIC
        flags.append(lrec >> 29)
        pos += 8 + (lrec & ((1 << 29) - 1))
        pos += -pos % 4
    assert flags == [0, 1, 3]
    assert [it.data for it in open_pool(rec).read(["rec:1", "rec:0"])] == [odd, images[0]]


def test_recordio_damaged_records(tmp_path, images):
    rec, idx = write_recordio(tmp_path / "train", images, LABELS)
    offsets = dict(read_index(idx))
    raw = bytearray(rec.read_bytes())
    raw[offsets[2]:offsets[2] + 4] = b"\0\0\0\0"          # record 2: bad magic number
    rec.write_bytes(bytes(raw[:offsets[5] + 40]))          # record 5 truncated, identities gone
    items = list(open_pool(tmp_path).read([f"rec:{i}" for i in range(1, 6)]))
    assert [it.data for it in items] == [images[0], None, images[2], images[3], None]
    assert "magic" in items[1].error and "truncated" in items[4].error


def test_recordio_not_openable(tmp_path):
    (tmp_path / "a.rec").write_bytes(b"garbage!" * 8)
    (tmp_path / "a.idx").write_text("0\t0\n")
    one_line_error(lambda: open_pool(tmp_path / "a.rec").keys(), "a.rec", "RecordIO")
    (tmp_path / "b.rec").write_bytes(b"")
    one_line_error(lambda: open_pool(tmp_path / "b.rec", source="recordio"), ".idx")


# ====================================================================== tsv

def tsv_line(mid: str, data: bytes) -> str:
    return f"{mid}\t1\thttp://example.com/{mid}.jpg\t{base64.b64encode(data).decode()}\n"


def test_tsv_ms_celeb(tmp_path, images):
    lines = [tsv_line(f"m.{i}", im) for i, im in enumerate(images)]
    lines.insert(2, "m.bad\t1\turl\t@@not*base64@@\n")
    lines.insert(4, "\n")
    path = tmp_path / "FaceImageCroppedWithAlignment.tsv"
    path.write_text("".join(lines))
    assert detect_source(path) == "tsv" == detect_source(tmp_path)
    source = open_pool(path)
    assert source.keys() == [f"{path.name}:{n}" for n in (1, 2, 3, 4, 6, 7)]
    items = read_all(source)
    assert [it.data for it in items] == images[:2] + [None] + images[2:]
    assert "base64" in items[2].error and "line 3" in items[2].error
    good = [k for k, it in zip(source.keys(), items) if it.error is None]
    assert [it.data for it in pickle.loads(pickle.dumps(source)).read(good[::-1])] == images[::-1]


def test_tsv_folder_and_column(tmp_path, images):
    for name, part in (("a.tsv", images[:3]), ("b.tsv", images[3:])):
        (tmp_path / name).write_text("".join(
            f"{base64.b64encode(im).decode()}\tm.{i}\n" for i, im in enumerate(part)))
    source = open_pool(tmp_path, column=0)
    assert source.keys() == ["a.tsv:1", "a.tsv:2", "a.tsv:3", "b.tsv:1", "b.tsv:2"]
    check_roundtrip(source, images)
    items = list(open_pool(tmp_path, column=5).read(["a.tsv:1", "a.tsv:9"]))
    assert "column 5" in items[0].error and "a.tsv:9" in items[1].error
    one_line_error(lambda: open_pool(tmp_path, column="last"), "column", "'last'")


# ====================================================================== parquet

def write_parquet(path: Path, images: list[bytes], **kwargs) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "image": [{"bytes": im, "path": f"{i}.jpg"} for i, im in enumerate(images)],
        "raw": pa.array(images, type=pa.binary()),
        "label": list(range(len(images))),
    })
    pq.write_table(table, path, row_group_size=2, **kwargs)


def test_parquet_struct_and_binary_columns(tmp_path, images):
    import pyarrow.parquet as pq

    path = tmp_path / "train-00000.parquet"
    write_parquet(path, images)
    assert pq.ParquetFile(path).metadata.num_row_groups == 3
    assert detect_source(path) == "parquet" == detect_source(tmp_path)
    source = open_pool(path)
    assert source.keys() == [f"{path.name}:{r}" for r in range(5)]
    check_roundtrip(source, images)
    check_roundtrip(open_pool(tmp_path, column="raw"), images)
    one_line_error(lambda: open_pool(path, column="label").keys(), "'label'", "column=")
    one_line_error(lambda: open_pool(path, column="nope").keys(), "'nope'", "image, raw, label")


def test_parquet_folder_paths_and_bad_cells(tmp_path, images):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "data").mkdir()
    write_parquet(tmp_path / "data" / "a.parquet", images[:3])
    (tmp_path / "data" / "img.png").write_bytes(images[3])
    pq.write_table(pa.table({"pic": [{"bytes": None, "path": "img.png"},
                                     {"bytes": None, "path": "gone.png"}, None]}),
                   tmp_path / "data" / "b.parquet")
    source = open_pool(tmp_path)  # each file's own image column: image in a, pic in b
    assert source.keys() == [f"data/{f}.parquet:{r}" for f in "ab" for r in range(3)]
    items = read_all(source)
    assert [it.data for it in items] == images[:4] + [None, None]
    assert "gone.png" in items[4].error and "no image" in items[5].error
    pq.write_table(pa.table({"a": [b"x"], "b": [b"y"]}), tmp_path / "two.parquet")
    one_line_error(lambda: open_pool(tmp_path / "two.parquet").keys(), "2 image-like columns",
                   "column=")


# ====================================================================== hf

def test_hf_save_to_disk(tmp_path, images):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": im, "path": None} for im in images], "label": LABELS},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("float32")}),
    )
    ds.save_to_disk(str(tmp_path / "pool"))
    assert detect_source(tmp_path / "pool") == "hf"
    source = open_pool(tmp_path / "pool")
    assert source.keys() == [f"hf:{r}" for r in range(5)]
    check_roundtrip(source, images)
    assert list(source.read(["hf:9"]))[0].error
    one_line_error(lambda: open_pool(tmp_path / "pool", column="label").keys(), "'label'")


# ====================================================================== webdataset

def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: Path, images: list[bytes], start: int) -> list[str]:
    names = []
    with tarfile.open(path, "w") as tar:
        for i, im in enumerate(images, start):
            ext = "png" if im.startswith(b"\x89PNG") else "jpg"
            name = f"s{i:03d}.{ext}"
            add_member(tar, f"s{i:03d}.cls", str(i).encode())
            add_member(tar, name, im)
            names.append(f"{path.name}:{name}")
    return names


def test_webdataset_shards(tmp_path, images):
    keys = write_shard(tmp_path / "shard-000.tar", images[:3], 0)
    keys += write_shard(tmp_path / "shard-001.tar", images[3:], 3)
    assert detect_source(tmp_path) == "webdataset" == detect_source(tmp_path / "shard-000.tar")
    source = open_pool(tmp_path)
    assert source.keys() == keys
    check_roundtrip(source, images)


def test_webdataset_missing_and_truncated_members(tmp_path, images):
    path = tmp_path / "bad.tar"
    with tarfile.open(path, "w") as tar:
        add_member(tar, "a.jpg", images[0])
        add_member(tar, "b.json", b"{}")  # a sample whose image member is missing
        add_member(tar, "c.seg.png", images[2])
        add_member(tar, "c.jpg", images[1])  # the plain image extension wins
        add_member(tar, "d.jpg", images[3])
    raw = path.read_bytes()
    path.write_bytes(raw[:raw.index(images[3]) + 20])  # d.jpg cut short, end of the tar gone
    source = open_pool(path)
    assert source.keys() == ["bad.tar:a.jpg", "bad.tar:b", "bad.tar:c.jpg", "bad.tar:d.jpg"]
    items = read_all(source) + list(source.read(["bad.tar:zzz.jpg"]))
    assert [it.data for it in items] == [images[0], None, images[1], None, None]
    assert "no image member" in items[1].error and "b.json" in items[1].error
    assert "truncated" in items[3].error and "zzz.jpg" in items[4].error


def test_webdataset_not_a_tar(tmp_path):
    (tmp_path / "x.tar").write_bytes(b"\x1f\x8b" + b"\0" * 600)
    one_line_error(lambda: open_pool(tmp_path / "x.tar").keys(), "x.tar", "uncompressed tar")


# ====================================================================== video

def write_video(path: Path, *, seconds: int = 3, rate: int = 10, size: int = 32) -> None:
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 4_000_000
        for i in range(seconds * rate):
            arr = np.full((size, size, 3), 8 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def frame_number(arr: np.ndarray) -> int:
    return int(round(float(arr.mean()) / 8))


def test_video_sampled_frames(tmp_path):
    pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    write_video(path)
    write_video(tmp_path / "other.avi", seconds=1)
    assert detect_source(path) == "video" == detect_source(tmp_path)
    source = open_pool(path, fps=2)
    keys = source.keys()
    assert keys == [f"clip.mp4@{ms}" for ms in range(0, 3000, 500)]
    items = read_all(source)
    assert all(it.error is None and it.data.shape == (32, 32, 3) and it.data.dtype == np.uint8
               for it in items)
    assert [frame_number(it.data) for it in items] == [0, 5, 10, 15, 20, 25]
    clone = pickle.loads(pickle.dumps(source))
    subset = list(clone.read([keys[4], keys[1], "clip.mp4@1234", "nope.mp4@0"]))
    assert [frame_number(it.data) for it in subset[:3]] == [20, 5, 12]
    assert subset[3].error
    assert item_id(items[0].data) == item_id(items[0].data.copy())
    assert item_id(items[0].data) != item_id(items[1].data)
    assert open_pool(tmp_path).keys() == ["clip.mp4@0", "clip.mp4@1000", "clip.mp4@2000",
                                          "other.avi@0"]
    one_line_error(lambda: open_pool(path, fps=0), "fps=0", "frames per second")


# ====================================================================== folder

def test_folder_tree(tmp_path, images):
    names = ["a/1.JPG", "a/b/2.png", "c.jpeg", "d.webp", "z.bmp"]
    for name, im in zip(names, images):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(im)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.jpg").write_bytes(images[0])
    (tmp_path / ".y.jpg").write_bytes(images[0])
    (tmp_path / "notes.txt").write_text("not an image")
    assert detect_source(tmp_path) == "folder"
    source = open_pool(tmp_path)
    assert source.keys() == names
    check_roundtrip(source, images)
    (tmp_path / "c.jpeg").unlink()
    assert "not found" in list(source.read(["c.jpeg"]))[0].error
    (tmp_path / "e.png").write_bytes(images[2])  # files added later: a new key
    assert set(open_pool(tmp_path).keys()) - set(names) == {"e.png"}


# ====================================================================== detection and errors

def test_most_specific_rule_wins_and_forcing(tmp_path, images):
    (tmp_path / "img.jpg").write_bytes(images[0])
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.tsv").write_text(tsv_line("m.1", images[1]))
    assert detect_source(tmp_path) == "tsv"
    assert [it.data for it in read_all(open_pool(tmp_path))] == [images[1]]
    forced = open_pool(tmp_path, source="Folder")
    assert forced.keys() == ["img.jpg"]
    assert DETECTION_ORDER == ("recordio", "tsv", "parquet", "hf", "webdataset", "video",
                               "folder")
    assert detection_order() == list(DETECTION_ORDER)
    assert set(POOL_SOURCES) == set(DETECTION_ORDER)


def test_user_errors_are_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    msg = one_line_error(lambda: open_pool(tmp_path), str(tmp_path), "source=")
    assert all(name in msg for name in POOL_SOURCES)
    one_line_error(lambda: open_pool(tmp_path / "nope"), "does not exist")
    one_line_error(lambda: open_pool(tmp_path, source="lmdb"), "'lmdb'", "recordio", "folder",
                   "--source")
    one_line_error(lambda: open_pool(tmp_path, source="folder", colum=1), "'colum'", "no options")
    one_line_error(lambda: open_pool(tmp_path, source="tsv", colum=1), "'colum'", "column")
    one_line_error(lambda: open_pool(tmp_path, source="tsv"), ".tsv", "tsv source")
    one_line_error(lambda: open_pool(tmp_path / "notes.txt", source="hf"), "not a folder")


def test_item_id_and_shared_constants():
    from omnifer.artifacts import content_id
    from omnifer.data.images import IMAGE_EXTENSIONS as DATA_EXTENSIONS

    assert item_id(b"abc") == content_id(b"abc") == item_id(bytearray(b"abc"))
    assert item_id(b"abc") != item_id(b"abd")
    assert item_id(np.zeros((2, 3, 3), np.uint8)) != item_id(np.zeros((3, 2, 3), np.uint8))
    assert IMAGE_EXTENSIONS == DATA_EXTENSIONS


def test_import_stays_light():
    import subprocess
    import sys

    code = ("import sys, omnifer.pools; "
            "print(sorted(m for m in ('torch', 'pandas', 'pyarrow', 'datasets', 'av') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
