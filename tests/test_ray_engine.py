"""The Ray engine embeds a pool exactly as the local engine does, in chunk order."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from omnifer.errors import OmniferError  # noqa: E402
from omnifer.models import ModelConfig, build_model, save_checkpoint  # noqa: E402
from omnifer.models.embedder import Embedder  # noqa: E402
from omnifer.pools import open_pool  # noqa: E402
from omnifer.pools.chunks import read_chunk  # noqa: E402
from omnifer.pools.embed_config import EmbedConfig  # noqa: E402
from omnifer.pools.embed import embed_pool  # noqa: E402
from omnifer.pools.engines.ray import ray_chunks  # noqa: E402
from omnifer.pools.index import gather  # noqa: E402


@pytest.fixture(scope="module")
def ray_local():
    """A small local Ray instance started by the engine itself, shut down after the module."""
    ray = pytest.importorskip("ray")
    address = os.environ.pop("RAY_ADDRESS", None)
    yield ray
    ray.shutdown()
    if address is not None:
        os.environ["RAY_ADDRESS"] = address


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny model and a folder of 40 JPEGs, one corrupt file and one duplicate."""
    from PIL import Image

    root = tmp_path_factory.mktemp("ray")
    save_checkpoint(build_model(ModelConfig(backbone="convnet", input_size=32), seed=0),
                    root / "model")
    pool = root / "pool"
    (pool / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(40):
        image = rng.integers(0, 256, (40 + i % 3, 48, 3), dtype=np.uint8)
        Image.fromarray(image).save(pool / ("sub" if i % 4 else ".") / f"img{i:02d}.jpg")
    (pool / "broken.jpg").write_bytes(b"not an image")
    (pool / "sub" / "copy.jpg").write_bytes((pool / "img00.jpg").read_bytes())
    config = EmbedConfig(pool=str(pool), source="folder", model=str(root / "model"),
                         model_fingerprint="test", input_size=32, shard_size=16, batch_size=8,
                         device="cpu")
    return pool, config


@pytest.mark.slow
def test_ray_engine_matches_local_engine(ray_local, setup, tmp_path):
    pool, config = setup
    src = open_pool(pool)
    runs = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        result = embed_pool(src, out, config=config, engine=engine, workers=1,
                            on_bad_files="skip")
        emb_path, ids_path, n = gather(result.shards, None, out)
        import pyarrow.parquet as pq

        runs[engine] = (result.counts, np.load(emb_path), pq.read_table(ids_path)["key"])
    local, ray = runs["local"], runs["ray"]
    assert ray[0] == local[0]
    assert local[0]["bad"] == 1 and local[0]["duplicates"] == 1 and local[0]["faces"] == 40
    assert ray[2].to_pylist() == local[2].to_pylist()
    assert ray[1].dtype == np.float16 and ray[1].shape == local[1].shape == (40, ray[1].shape[1])
    assert np.allclose(ray[1].astype(np.float32), local[1].astype(np.float32), atol=1e-3)


@pytest.mark.slow
def test_ray_chunks_are_read_chunk_and_embedder_in_order(ray_local, setup):
    pool, config = setup
    src = open_pool(pool)
    keys = src.keys()
    embed = Embedder(config.model, device="cpu", batch_size=config.batch_size)
    got = list(ray_chunks(src, keys, config=config, workers=1, chunk=5, with_images=True))
    assert len(got) == -(-len(keys) // 5)
    for i, (chunk, emb) in enumerate(got):
        ref = read_chunk(src, keys[i * 5:i * 5 + 5], size=32)
        assert chunk.rows == ref.rows
        assert [s["key"] for s in chunk.skipped] == [s["key"] for s in ref.skipped]
        assert np.array_equal(chunk.images, ref.images)
        assert emb.dtype == np.float16 and len(emb) == len(ref.rows)
        assert np.allclose(emb.astype(np.float32), embed(ref.images).astype(np.float32),
                           atol=1e-3)
    images = [k for k in keys if k.endswith(".jpg") and "broken" not in k][:3]
    chunk, emb = next(iter(ray_chunks(src, images, config=config, chunk=5)))
    assert chunk.images.shape == (3, 0, 0, 3) and len(emb) == 3  # crops stay on the actors


def test_missing_ray_is_one_line(setup, monkeypatch):
    pool, config = setup
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(OmniferError, match=r"pip install 'omnifer\[ray\]'") as err:
        next(iter(ray_chunks(open_pool(pool), ["img00.jpg"], config=config)))
    assert "\n" not in str(err.value)
