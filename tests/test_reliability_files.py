"""Faults in pool and labeled files, a full disk, killed parents, damaged resumable state and
real photos, each injected for real: renames, FIFOs, symlink loops, broken symlinks, names that
are not UTF-8, unreadable folders, a small tmpfs, kill -9, truncated files."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from omnifer.artifacts import path_fingerprint, walk_files  # noqa: E402
from omnifer.errors import OmniferError  # noqa: E402
from omnifer.models import ModelConfig, build_model, save_checkpoint  # noqa: E402
from omnifer.pools import open_pool  # noqa: E402
from omnifer.pools.embed import embed_pool  # noqa: E402
from omnifer.pools.embed_config import EmbedConfig  # noqa: E402
from omnifer.pools.index import gather, load_index_outputs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def indexed(result, keys, out):
    """``{key: embedding}`` of what ``gather`` puts into the index, every key one of the
    pool's current ``keys``."""
    emb, ids, n = gather(result.shards, out, gone=result.gone)
    import pyarrow.parquet as pq

    got = dict(zip(pq.read_table(ids).column("key").to_pylist(), np.load(emb)))
    assert set(got) <= set(keys)
    return got


def one_line(exc_info, *words):
    text = str(exc_info.value)
    assert "\n" not in text and "{" not in text, text
    for w in words:
        assert w in text, text
    return text


# ====================================================================== 1: renamed and moved files

def test_renamed_file_is_embedded_under_its_new_key(pool, model_dir, tmp_path, caplog, config_for):
    cfg = config_for(pool, model_dir)
    first = embed_pool(open_pool(pool), tmp_path / "r1", config=cfg, workers=0)
    keys = open_pool(pool).keys()
    before = indexed(first, keys, tmp_path / "r1")
    old = keys[5]
    new = old.rsplit("/", 1)[0] + "/renamed_" + old.rsplit("/", 1)[1]
    os.rename(pool / old, pool / new)
    src = open_pool(pool)
    second = embed_pool(src, tmp_path / "r2", config=cfg, inherited=first.shards, workers=0)
    assert second.counts["vanished"] == 1 and second.counts["duplicates"] == 0
    assert second.counts["faces"] == 1 and second.counts["reused"] == len(keys) - 1
    assert old in caplog.text and "gone" in caplog.text
    after = indexed(second, src.keys(), tmp_path / "r2")
    assert len(after) == len(keys) and old not in after
    assert np.array_equal(after[new], before[old])


def test_pool_moved_into_a_subfolder_keeps_every_image(pool, model_dir, tmp_path, config_for):
    cfg = config_for(pool, model_dir)
    first = embed_pool(open_pool(pool), tmp_path / "r1", config=cfg, workers=0)
    n = len(open_pool(pool).keys())
    (tmp_path / "moved").mkdir()
    shutil.move(str(pool), str(tmp_path / "moved" / "sub"))
    pool.mkdir()
    shutil.move(str(tmp_path / "moved" / "sub"), str(pool / "sub"))
    src = open_pool(pool)
    second = embed_pool(src, tmp_path / "r2", config=cfg, inherited=first.shards, workers=0)
    assert second.counts["vanished"] == n and second.counts["faces"] == n
    assert len(indexed(second, src.keys(), tmp_path / "r2")) == n


def test_duplicate_of_a_deleted_file_is_embedded_again(pool, model_dir, tmp_path, config_for):
    cfg = config_for(pool, model_dir)
    keys = open_pool(pool).keys()
    shutil.copy(pool / keys[0], pool / "copy.jpg")
    first = embed_pool(open_pool(pool), tmp_path / "r1", config=cfg, workers=0)
    assert first.counts["duplicates"] == 1
    (pool / keys[0]).unlink()
    src = open_pool(pool)
    second = embed_pool(src, tmp_path / "r2", config=cfg, inherited=first.shards, workers=0)
    assert second.counts["vanished"] == 1 and second.counts["faces"] == 1
    assert "copy.jpg" in indexed(second, src.keys(), tmp_path / "r2")


# ====================================================================== 5: a full disk

@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (needs root and mount), unmounted afterwards."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def tmp_files(root):
    return [p for p in Path(root).rglob("*.tmp")]


CACHE_ON_DISK = """
import sys
from omnifer.data import read_labeled
from omnifer.data.cache import decoded_images
decoded_images(read_labeled(sys.argv[1]), int(sys.argv[3]), sys.argv[2])
print("done")
"""


@pytest.mark.slow
def test_full_disk_while_caching_training_images(tiny_synth, small_disk):
    # 80 images at 128 px are 3.9 MB of pixels: more than the disk holds
    proc = subprocess.run([sys.executable, "-c", CACHE_ON_DISK, str(tiny_synth.labeled_toml),
                           str(small_disk / "cache"), "128"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    last = proc.stderr.strip().splitlines()[-1]
    assert "no space left on device" in last and str(small_disk / "cache") in last
    assert not tmp_files(small_disk)
    # with room, the same call completes
    proc = subprocess.run([sys.executable, "-c", CACHE_ON_DISK, str(tiny_synth.labeled_toml),
                           str(small_disk / "cache"), "48"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and "done" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.slow
def test_full_disk_while_indexing_fails_cleanly_and_resumes(pool, model_dir, small_disk):
    ws = small_disk / "ws"
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (3 * 1024 * 1024 - 40 * 1024))  # leaves about 40 KiB
    cmd = [sys.executable, "-m", "omnifer.cli.main", "-q", "-w", str(ws), "index", str(pool),
           "--model", str(model_dir), "--workers", "0", "--device", "cpu", "--shard-size", "16"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no space left on device" in lines[0], proc.stderr[-2000:]
    assert not tmp_files(small_disk)
    manifests = list(ws.glob(".omnifer/runs/index/*/manifest.json"))
    # "failed" when the disk has room left for the manifest (the test below); a disk full to
    # the last page cannot take even that, and the run stays "running"
    assert [json.loads(m.read_text())["status"] in ("failed", "running") for m in manifests] == [True]
    filler.unlink()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(manifests[0].read_text())["status"] == "complete"


def test_injected_enospc_while_gathering_is_one_line(pool, model_dir, tmp_path, monkeypatch):
    from omnifer import pipeline
    from omnifer.pools.config import IndexConfig

    config = IndexConfig(workers=0, device="cpu", shard_size=16)

    reserve = os.posix_fallocate

    def full(fd, offset, length):  # the gathered embeddings only (written as a .tmp file)
        if not os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".embeddings."):
            return reserve(fd, offset, length)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OmniferError) as err:
        pipeline.index(tmp_path / "ws", config, pool=pool, model=model_dir)
    one_line(err, "no space left on device", str(tmp_path / "ws"))
    assert not tmp_files(tmp_path / "ws")
    manifest = next((tmp_path / "ws").glob(".omnifer/runs/index/*/manifest.json"))
    assert json.loads(manifest.read_text())["status"] == "failed"
    shards = {p: p.stat().st_mtime_ns for p in manifest.parent.glob("shards/*.parquet")}
    monkeypatch.undo()
    rec = pipeline.index(tmp_path / "ws", config, pool=pool, model=model_dir)
    assert rec.path == manifest.parent  # the failed run resumed, its shards kept as written
    assert shards and all(p.stat().st_mtime_ns == t for p, t in shards.items())
    assert rec.counts["items"] == rec.counts["indexed"] == len(open_pool(pool).keys())


# ====================================================================== 7: orphaned workers

def children_of(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_and_check_children(proc, want: int):
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()[-2000:]
    kids = children_of(proc.pid)
    assert len(kids) >= want, kids
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.time() + 8
    while time.time() < deadline and any(alive(k) for k in kids):
        time.sleep(0.2)
    survivors = [k for k in kids if alive(k)]
    for k in survivors:
        os.kill(k, signal.SIGKILL)
    assert not survivors, f"workers {survivors} outlived their killed parent"


INDEX_THEN_WAIT = """
import json, sys, time
from omnifer.pools import open_pool
from omnifer.pools.embed_config import EmbedConfig
from omnifer.pools.embed import embed_pool
cfg = EmbedConfig(**json.loads(sys.argv[1]))
def progress(done, total):
    print("ready", flush=True)
    time.sleep(120)
embed_pool(open_pool(cfg.pool), sys.argv[2], config=cfg, workers=2, progress=progress)
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_index_workers_die_with_their_killed_parent(tiny_synth, pool, model_dir, tmp_path, config_for):
    from dataclasses import asdict

    # 96 px crops fill the workers' result pipes, where orphans used to block forever
    cfg = config_for(pool, model_dir, input_size=96, shard_size=64)
    for k in range(3):  # more chunks than the workers prefetch
        shutil.copytree(tiny_synth.pool, pool / f"more{k}")
    proc = subprocess.Popen([sys.executable, "-c", INDEX_THEN_WAIT, json.dumps(asdict(cfg)),
                             str(tmp_path / "run")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    kill_and_check_children(proc, 2)


SYNTH_THEN_WAIT = """
import sys, time
from omnifer.synth import generate
def progress(done, total):
    if done:
        print("ready", flush=True)
        time.sleep(120)
generate(sys.argv[1], preset="tiny", size=48, workers=2, on_progress=progress)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_synth_workers_die_with_their_killed_parent(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SYNTH_THEN_WAIT, str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    kill_and_check_children(proc, 2)


# ====================================================================== 10: damaged state

def test_damaged_shards_of_an_earlier_run_are_embedded_again(pool, model_dir, tmp_path, caplog, config_for):
    cfg = config_for(pool, model_dir)
    src = open_pool(pool)
    first = embed_pool(src, tmp_path / "r1", config=cfg, workers=0)
    whole = indexed(first, src.keys(), tmp_path / "r1")
    first.shards[0].with_suffix(".npy").unlink()  # deleted
    first.shards[1].write_bytes(b"not parquet")  # garbage
    first.shards[2].with_suffix(".npy").write_bytes(b"\x93NUMPY")  # truncated
    second = embed_pool(src, tmp_path / "r2", config=cfg, inherited=first.shards, workers=0)
    assert second.counts["faces"] == 48 and second.counts["reused"] == len(src.keys()) - 48
    assert "damaged" in caplog.text
    again = indexed(second, src.keys(), tmp_path / "r2")
    assert again.keys() == whole.keys()
    assert all(np.array_equal(again[k], whole[k]) for k in whole)
    # the same for a resumed run's own shards
    (tmp_path / "r2/shards/shard-00000.parquet").unlink()
    third = embed_pool(src, tmp_path / "r2", config=cfg, inherited=first.shards, workers=0)
    assert len(indexed(third, src.keys(), tmp_path / "r2")) == len(whole)


def test_damaged_index_outputs_are_one_line(pool, model_dir, tmp_path, config_for):
    src = open_pool(pool)
    result = embed_pool(src, tmp_path / "r", config=config_for(pool, model_dir), workers=0)
    emb, ids, n = gather(result.shards, tmp_path / "r", gone=result.gone)
    vectors, table = load_index_outputs(emb, ids)
    assert len(vectors) == len(table) == n
    good = emb.read_bytes()
    emb.write_bytes(good[:len(good) // 2])  # truncated
    with pytest.raises(OmniferError) as err:
        load_index_outputs(emb, ids)
    one_line(err, str(emb), "omnifer index")
    emb.write_bytes(good)
    ids.write_bytes(b"garbage")
    with pytest.raises(OmniferError) as err:
        load_index_outputs(emb, ids)
    one_line(err, str(ids), "omnifer index")
    source = (ROOT / "omnifer/pipeline/mine.py").read_text()
    assert "load_index_outputs(index_run.embeddings, index_run.ids)" in source


def test_truncated_train_state_is_one_line_naming_fresh(tiny_synth, tmp_path):
    from omnifer.data import read_labeled
    from omnifer.train import TrainConfig, train

    labeled = read_labeled(tiny_synth.labeled_toml)
    config = TrainConfig(backbone="convnet", input_size=32, epochs=1, batch_size=16,
                         val_fraction=0.3, patience=0, device="cpu")
    train(labeled, tmp_path / "run", config=config, cache_dir=tmp_path / "cache")
    state = next((tmp_path / "run").rglob("state.pt"))
    state.write_bytes(state.read_bytes()[:1000])
    with pytest.raises(OmniferError) as err:
        train(labeled, tmp_path / "run", config=config, cache_dir=tmp_path / "cache")
    one_line(err, str(state), "--fresh")


# ====================================================================== 11: odd files

def make_odd_entries(folder: Path) -> None:
    """A broken symlink, a symlink loop, a FIFO, a name that is not UTF-8 and a folder."""
    os.symlink(folder / "nowhere.jpg", folder / "broken.jpg")
    os.symlink(folder / "loop.jpg", folder / "loop.jpg")
    os.mkfifo(folder / "pipe.jpg")
    raw = os.fsencode(folder) + b"/caf\xe9.jpg"
    with open(raw, "wb") as fh:
        fh.write(b"x")
    (folder / "locked").mkdir()


@pytest.fixture
def locked_folders(monkeypatch):
    """Folders named ``locked`` cannot be listed (as for anyone but root under mode 000)."""
    real = os.scandir

    def scandir(path="."):
        if os.path.basename(os.fspath(path)) == "locked":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


@pytest.fixture
def alarm():
    """Fail instead of hanging forever (a FIFO opened for reading waits for a writer)."""
    def hang(*_):
        raise TimeoutError("hung")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


ODD = {"broken.jpg", "loop.jpg", "pipe.jpg", "caf\\xe9.jpg", "locked/"}


def test_odd_entries_in_a_pool_are_counted_never_fatal(pool, model_dir, tmp_path,
                                                       locked_folders, alarm, config_for):
    make_odd_entries(pool)
    n = len([p for p in pool.rglob("*.jpg") if p.is_file()]) - 1  # less the non-UTF-8 one
    src = open_pool(pool)
    assert len(src.keys()) == n
    assert {item.key for item in src.unlisted()} == ODD
    result = embed_pool(src, tmp_path / "r", config=config_for(pool, model_dir), workers=0,
                        on_bad_files="skip")
    assert result.counts["bad"] == len(ODD) and result.counts["faces"] == n
    assert {b["key"] for b in result.bad} == ODD
    with pytest.raises(OmniferError) as err:
        embed_pool(open_pool(pool), tmp_path / "e", config=config_for(pool, model_dir),
                   workers=0, on_bad_files="error")
    one_line(err, "--on-bad-files skip")
    path_fingerprint(pool)  # every run's manifest fingerprints its inputs


def test_a_fifo_that_replaces_a_listed_file_is_not_waited_on(pool, model_dir, alarm):
    src = open_pool(pool)
    key = src.keys()[0]
    (pool / key).unlink()
    os.mkfifo(pool / key)
    item = next(src.read([key]))
    assert item.data is None and "not a regular file" in item.error


def test_odd_entries_in_a_labeled_folder_follow_the_policy(tmp_path, locked_folders, alarm):
    from PIL import Image

    from omnifer.data import read_labeled

    root = tmp_path / "labeled"
    (root / "happy").mkdir(parents=True)
    (root / "sad").mkdir()
    for k in range(3):
        Image.new("RGB", (24, 24), (40 * k, 90, 160)).save(root / "happy" / f"{k}.png")
        Image.new("RGB", (24, 24), (200, 40 * k, 10)).save(root / "sad" / f"{k}.png")
    make_odd_entries(root / "sad")
    data = read_labeled(root, format="folder", on_bad_files="skip")
    assert len(data) == 6 and len(data.bad) == len(ODD)
    assert all("sad" in str(b) for b in data.bad)
    with pytest.raises(OmniferError) as err:
        read_labeled(root, format="folder", on_bad_files="error")
    one_line(err)
    path_fingerprint(root)


def test_walk_files_reports_what_it_skips(tmp_path, locked_folders, alarm):
    make_odd_entries(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.jpg").write_bytes(b"a")
    os.symlink(tmp_path, tmp_path / "sub" / "up")  # a folder loop
    (tmp_path / "ok.jpg").write_bytes(b"b")
    skipped = []
    assert list(walk_files(tmp_path, skipped=skipped)) == ["ok.jpg", "sub/a.jpg"]
    reasons = dict(skipped)
    assert reasons.keys() == ODD | {"sub/up/"}
    assert "broken" in reasons["broken.jpg"] and "loop" in reasons["loop.jpg"]
    assert "FIFO" in reasons["pipe.jpg"] and "UTF-8" in reasons["caf\\xe9.jpg"]
    assert "cannot be read" in reasons["locked/"] and "loop" in reasons["sub/up/"]


# ====================================================================== 16: real photos

@pytest.fixture(scope="module")
def astronaut():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("retinaface.weights")
    return pytest.importorskip("skimage.data").astronaut()


def test_a_large_photo_gives_its_one_face(astronaut):
    from PIL import Image

    from omnifer.faces import RetinaFaceDetector

    detector = RetinaFaceDetector()
    small = detector(astronaut)
    big = np.asarray(Image.fromarray(astronaut).resize((2560, 2560), Image.BICUBIC))
    faces = detector(big)
    assert len(small) == len(faces) == 1
    assert np.allclose(np.array(faces[0].box) / 5, small[0].box, atol=6)
    assert np.allclose(faces[0].landmarks / 5, small[0].landmarks, atol=4)


@pytest.mark.parametrize("side", [24, 32, 40])
def test_a_tiny_face_image_gives_its_face(astronaut, side):
    from PIL import Image

    from omnifer.faces import RetinaFaceDetector

    crop = Image.fromarray(astronaut[20:230, 130:300])
    tiny = np.asarray(crop.resize((side, round(side * 210 / 170)), Image.BILINEAR))
    faces = RetinaFaceDetector(min_face=10)(tiny)
    assert len(faces) == 1
    x1, y1, x2, y2 = faces[0].box
    assert 0 <= x1 < x2 <= side and 0 <= y1 < y2 <= tiny.shape[0]


def test_a_pool_without_faces_is_one_readable_line(astronaut, model_dir, tmp_path):
    from PIL import Image

    from omnifer import pipeline
    from omnifer.pools.config import IndexConfig

    pool = tmp_path / "walls"
    pool.mkdir()
    for k in range(3):
        Image.new("RGB", (120, 90), (60 * k, 120, 200)).save(pool / f"{k}.png")
    with pytest.raises(OmniferError) as err:
        pipeline.index(tmp_path / "ws", IndexConfig(detect="retinaface", workers=0, device="cpu"),
                       pool=pool, model=model_dir)
    one_line(err, "of its 3 images, 3 had no face", "--det-threshold")


def test_full_disk_while_saving_train_state_is_one_line(tmp_path, monkeypatch):
    """A checkpoint that does not fit: one line naming the folder, no temporary file left."""
    import pathlib

    from omnifer.train.loop import save_torch

    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pathlib.Path, "write_bytes", full)
    with pytest.raises(OmniferError, match=f"no space left on device in {tmp_path}"):
        save_torch({"weights": np.zeros(3)}, tmp_path / "state.pt")
    assert list(tmp_path.iterdir()) == []
