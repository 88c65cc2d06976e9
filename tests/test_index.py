"""Embedding a pool: shards, a real kill and resume, incremental runs, duplicates, bad files,
and the ``omnifer index`` command."""

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from omnifer.errors import OmniferError  # noqa: E402
from omnifer.models import ModelConfig, build_model, save_checkpoint  # noqa: E402
from omnifer.models.embedder import Embedder  # noqa: E402
from omnifer.pools import open_pool  # noqa: E402
from omnifer.pools.embed_config import EmbedConfig  # noqa: E402
from omnifer.pools.embed import embed_pool  # noqa: E402
from omnifer.pools.index import gather  # noqa: E402


def embeddings_of(result, keys, out):
    emb, ids, n = gather(result.shards, out, gone=result.gone)
    import pyarrow.parquet as pq

    got = pq.read_table(ids).column("key").to_pylist()
    assert set(got) <= set(keys)
    return np.load(emb), got


def test_embeds_every_image_once_in_shards(pool, model_dir, tmp_path, config_for):
    src = open_pool(pool)
    result = embed_pool(src, tmp_path / "run", config=config_for(pool, model_dir), workers=0)
    n = len(src.keys())
    assert result.counts["items"] == n and result.counts["faces"] == n
    assert len(result.shards) == -(-n // 16)
    emb, keys = embeddings_of(result, src.keys(), tmp_path)
    assert keys == src.keys() and emb.dtype == np.float16
    assert np.allclose(np.linalg.norm(emb.astype(np.float32), axis=1), 1, atol=2e-3)
    # the same as the model on the decoded images directly
    from PIL import Image

    img = np.asarray(Image.open(pool / keys[3]).convert("RGB").resize((32, 32), Image.BILINEAR))
    direct, norms = Embedder(model_dir, device="cpu").features(img[None])
    assert np.allclose(direct[0].astype(np.float32), emb[3].astype(np.float32), atol=2e-3)
    # each face's feature norm: the norm of the model's features, beside its embedding
    import pyarrow.parquet as pq

    recorded = pq.read_table(tmp_path / "ids.parquet").column("feature_norm").to_numpy()
    model = Embedder(model_dir, device="cpu").model
    x = (torch.from_numpy(np.array(img[None])).permute(0, 3, 1, 2).float() / 255
         - torch.tensor(model.config.mean).view(1, 3, 1, 1)) / torch.tensor(
        model.config.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expect = model.features(x).norm(dim=1).item()
    assert norms[0] == pytest.approx(expect, rel=1e-5)
    assert recorded[3] == pytest.approx(expect, rel=1e-3) and (recorded > 0).all()


def test_workers_give_the_same_embeddings(pool, model_dir, tmp_path, config_for):
    src = open_pool(pool)
    a = embed_pool(src, tmp_path / "a", config=config_for(pool, model_dir), workers=0)
    b = embed_pool(src, tmp_path / "b", config=config_for(pool, model_dir), workers=2)
    assert np.array_equal(embeddings_of(a, src.keys(), tmp_path / "a")[0],
                          embeddings_of(b, src.keys(), tmp_path / "b")[0])


KILLER = """
import os, signal, sys
from omnifer.pools import open_pool
from omnifer.pools.embed_config import EmbedConfig
from omnifer.pools.embed import embed_pool
cfg = EmbedConfig(**__import__("json").loads(sys.argv[1]))
def progress(done, total):
    if done >= 40:
        os.kill(os.getpid(), signal.SIGKILL)
embed_pool(open_pool(cfg.pool), sys.argv[2], config=cfg, workers=0, progress=progress)
"""


def test_killed_run_resumes_to_the_same_embeddings(pool, model_dir, tmp_path, config_for):
    cfg = config_for(pool, model_dir)
    src = open_pool(pool)
    proc = subprocess.run([sys.executable, "-c", KILLER, json.dumps(asdict(cfg)),
                           str(tmp_path / "killed")], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    progress = json.loads((tmp_path / "killed/shards/progress.json").read_text())
    assert sorted(progress["complete"]) == ["0", "1"]  # shard 2 was half done
    resumed = embed_pool(src, tmp_path / "killed", config=cfg, workers=0)
    whole = embed_pool(src, tmp_path / "whole", config=cfg, workers=0)
    # the resumed run counts the items of its killed invocation too: the same totals
    assert resumed.counts == whole.counts and resumed.counts["items"] == len(src.keys())
    a, ka = embeddings_of(resumed, src.keys(), tmp_path / "killed")
    b, kb = embeddings_of(whole, src.keys(), tmp_path / "whole")
    assert ka == kb and np.array_equal(a, b)
    with pytest.raises(OmniferError, match="start a new run"):
        embed_pool(src, tmp_path / "killed", config=config_for(pool, model_dir, batch_size=4))


def test_incremental_duplicates_and_bad_files(pool, model_dir, tmp_path, config_for):
    cfg = config_for(pool, model_dir)
    first = embed_pool(open_pool(pool), tmp_path / "r1", config=cfg, workers=0)
    old = open_pool(pool).keys()
    some = pool / old[0]
    (pool / "new").mkdir()
    shutil.copy(some, pool / "new" / "copy.jpg")  # an exact duplicate
    (pool / "new" / "broken.jpg").write_bytes(some.read_bytes()[:200])  # truncated
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 30, 30)).save(pool / "new" / "red.png")
    src = open_pool(pool)
    second = embed_pool(src, tmp_path / "r2", config=cfg, inherited=first.shards, workers=0,
                        on_bad_files="skip")
    assert second.counts == {"items": 3, "faces": 1, "bad": 1, "no_face": 0, "duplicates": 1,
                             "reused": len(old), "vanished": 0}
    assert second.bad[0]["key"] == "new/broken.jpg"
    # the same run again: the unreadable item its first invocation skipped is not read again
    # (no error under "error"), and still counted and listed
    again = embed_pool(src, tmp_path / "r2", config=cfg, inherited=first.shards, workers=0,
                       on_bad_files="error")
    assert again.counts == second.counts and again.bad == second.bad
    emb, keys = embeddings_of(second, src.keys(), tmp_path / "r2")
    assert len(keys) == len(old) + 1 and "new/red.png" in keys and "new/copy.jpg" not in keys
    old_emb, _ = embeddings_of(first, old, tmp_path / "r1")
    assert np.array_equal(emb[[keys.index(k) for k in old]], old_emb)
    with pytest.raises(OmniferError, match="new/broken.jpg") as err:
        embed_pool(src, tmp_path / "r3", config=cfg, inherited=first.shards, workers=0,
                   on_bad_files="error")
    assert "\n" not in str(err.value)



def test_unknown_engine_and_policy_are_one_line(pool, model_dir, tmp_path, config_for):
    src, cfg = open_pool(pool), config_for(pool, model_dir)
    for kwargs, words in (({"engine": "locl"}, ("'locl'", "local", "ray", "--engine")),
                          ({"on_bad_files": "ignore"}, ("'ignore'", "skip"))):
        with pytest.raises(OmniferError) as err:
            embed_pool(src, tmp_path / "run", config=cfg, workers=0, **kwargs)
        assert "\n" not in str(err.value) and all(w in str(err.value) for w in words)
    assert not (tmp_path / "run").exists()

@pytest.mark.slow
def test_cli_index_builds_a_flat_index(pool, tiny_synth, tmp_path, run_cli):
    pytest.importorskip("faiss")
    ws = tmp_path / "ws"
    code, out, err = run_cli("-q", "-w", ws, "train", "--data", tiny_synth.labeled_toml,
                             "--backbone", "convnet", "--size", "32", "--epochs", "1",
                             "--device", "cpu")
    assert code == 0, err
    r = run_cli.json("-q", "-w", ws, "index", pool, "--workers", "0", "--device", "cpu")
    n = len(open_pool(pool).keys())
    assert r["counts"]["indexed"] == n and r["index"]["factory"] == "Flat"
    assert r["index"]["count"] == n
    run = ws / ".omnifer/runs" / r["run"]
    from omnifer.pools.faiss_index import read_index

    index, sidecar = read_index(run / "index")
    emb = np.load(run / "embeddings.npy").astype(np.float32)
    scores, ids = index.search(emb[:5], 10)
    # each face finds itself at cosine 1 (a barely trained model may embed others as closely)
    assert np.allclose(scores[:, 0], 1.0, atol=2e-3) and all(i in ids[i] for i in range(5))
    # a second run over the unchanged pool reuses everything
    r2 = run_cli.json("-q", "-w", ws, "index", pool, "--workers", "0", "--device", "cpu")
    assert r2["counts"]["reused"] == n and r2["counts"]["items"] == 0
    code, out, err = run_cli("-w", ws, "index", pool, "--model", tmp_path / "nowhere")
    assert code != 0


def test_detect_and_align_on_a_real_photo(model_dir, tmp_path, config_for, photo_pool):
    pool = photo_pool
    src = open_pool(pool)
    result = embed_pool(src, tmp_path / "run", config=config_for(pool, model_dir,
                        detect="retinaface"), workers=0)
    assert result.counts["faces"] == 1 and result.counts["no_face"] == 1
    import pyarrow.parquet as pq

    rows = pq.read_table(result.shards[0]).to_pylist()
    face = next(r for r in rows if r["status"] == "ok")
    x1, y1, x2, y2 = face["box"]
    lm = np.asarray(face["landmarks"]).reshape(5, 2)
    assert face["key"] == "astronaut.jpg" and face["det_score"] > 0.9
    assert (lm[:, 0] > x1).all() and (lm[:, 0] < x2).all() and (lm[:, 1] > y1).all()
    assert next(r for r in rows if r["key"] == "gray.png")["status"] == "no_face"


def test_fast_jpeg_decoding_matches_pil(tmp_path):
    """The libjpeg path gives PIL's pixels for EXIF-rotated, gray and CMYK JPEGs; a truncated
    JPEG falls back to PIL and is reported, not returned half-grey."""
    import io

    from PIL import Image, ImageOps

    from omnifer.data.images import _decode_jpeg
    from omnifer.pools import PoolItem
    from omnifer.pools.chunks import decode

    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 255, (48, 30, 3), dtype=np.uint8)).resize((60, 96))
    variants = {}
    exif = base.getexif()
    exif[0x0112] = 6  # rotate on display
    for name, im, kw in (("rotated", base, {"exif": exif}), ("gray", base.convert("L"), {}),
                         ("cmyk", base.convert("CMYK"), {})):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90, **kw)
        variants[name] = buf.getvalue()
    for name, data in variants.items():
        with Image.open(io.BytesIO(data)) as im:
            ref = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        fast = _decode_jpeg(data)
        assert fast is not None and fast.shape == ref.shape, name
        assert np.abs(fast.astype(int) - ref).max() <= 1, name
    assert _decode_jpeg(variants["rotated"]).shape == (60, 96, 3)  # turned upright
    broken = variants["gray"][: len(variants["gray"]) // 2]
    assert _decode_jpeg(broken) is None
    image, reason = decode(PoolItem("k", broken))
    assert image is None and reason.startswith("cannot decode image")


def test_default_reading_workers_leave_the_model_its_cores():
    from omnifer.pools.config import IndexConfig

    c = IndexConfig()
    # on a CPU the model takes every core: two are left to it, so 2 cores read in-process
    assert [c.resolved_workers(n, gpu=False) for n in (1, 2, 3, 6, 16)] == [0, 0, 1, 4, 8]
    assert [c.resolved_workers(n, gpu=True) for n in (1, 2, 6, 32)] == [0, 1, 5, 8]
    assert IndexConfig(workers=3).resolved_workers(2, gpu=False) == 3
