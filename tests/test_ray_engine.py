"""The Ray engine writes the local engine's shards: the same files, byte for byte, the same
counts, and the same resume, whichever engine wrote the shards a run resumes from."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from omnifer.errors import OmniferError  # noqa: E402
from omnifer.models import ModelConfig, build_model, save_checkpoint  # noqa: E402
from omnifer.pools import open_pool  # noqa: E402
from omnifer.pools.embed import embed_pool  # noqa: E402
from omnifer.pools.embed_config import EmbedConfig  # noqa: E402
from omnifer.pools.content_ids import ContentIds  # noqa: E402
from omnifer.pools.engines import ray as ray_engine  # noqa: E402
from omnifer.pools.source import PoolSource  # noqa: E402


class Interrupted(Exception):
    """Raised by a progress callback to stop a run half way."""


@pytest.fixture(scope="module")
def ray_local():
    """A small local Ray instance (4 CPUs) started by the engine itself, shut down after the
    module."""
    ray = pytest.importorskip("ray")
    address = os.environ.pop("RAY_ADDRESS", None)
    ray_engine.connect(2)
    yield ray
    ray.shutdown()
    if address is not None:
        os.environ["RAY_ADDRESS"] = address


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny model and a folder of 150 JPEGs with one corrupt file and four duplicates: one
    next to its original, three in later shards (shards of 16 keys)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("ray")
    save_checkpoint(build_model(ModelConfig(backbone="convnet", input_size=32), seed=0),
                    root / "model")
    pool = root / "pool"
    (pool / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(150):
        image = rng.integers(0, 256, (40 + i % 3, 48, 3), dtype=np.uint8)
        Image.fromarray(image).save(pool / ("sub" if i % 4 else ".") / f"img{i:03d}.jpg")
    (pool / "broken.jpg").write_bytes(b"not an image")
    (pool / "img000b.jpg").write_bytes((pool / "img000.jpg").read_bytes())
    (pool / "sub" / "copy.jpg").write_bytes((pool / "img000.jpg").read_bytes())
    (pool / "sub" / "zz1.jpg").write_bytes((pool / "img004.jpg").read_bytes())
    (pool / "sub" / "zz2.jpg").write_bytes((pool / "sub" / "img001.jpg").read_bytes())
    config = EmbedConfig(pool=str(pool), source="folder", model=str(root / "model"),
                         model_fingerprint="test", input_size=32, shard_size=16, batch_size=8,
                         device="cpu")
    return pool, config


def shard_files(out):
    """``{file name: bytes}`` of a run's shard files, and its completed shards with rows."""
    folder = out / "shards"
    files = {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*"))}
    return files, json.loads((folder / "progress.json").read_text())["complete"]


def stop_after(n):
    """A progress callback that stops the run once ``n`` keys are done."""
    def progress(done, total):
        if done >= n:
            raise Interrupted
    return progress


def run(src, out, config, engine, **kwargs):
    kwargs.setdefault("workers", 2 if engine == "ray" else 0)
    return embed_pool(src, out, config=config, engine=engine, on_bad_files="skip", **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("shard_size,batch_size,block", [(16, 8, None), (150, 100, 64)])
def test_ray_writes_the_local_engines_shards(ray_local, setup, tmp_path, shard_size, batch_size,
                                             block):
    """Byte-identical shard files and equal counts: small shards in flight on two actors at
    once (duplicates across them), and shards of three blocks each."""
    pool, config = setup
    config = EmbedConfig(**{**asdict(config), "shard_size": shard_size,
                            "batch_size": batch_size})
    src = open_pool(pool)
    local = run(src, tmp_path / "local", config, "local")
    ray = run(src, tmp_path / "ray", config, "ray", engine_options={"block": block})
    assert ray.counts == local.counts
    assert local.counts["bad"] == 1 and local.counts["duplicates"] == 4
    assert local.counts["faces"] == 150 and local.counts["items"] == 155
    assert [p.name for p in ray.shards] == [p.name for p in local.shards]
    assert len(local.shards) == -(-155 // shard_size)
    assert shard_files(tmp_path / "ray") == shard_files(tmp_path / "local")


@pytest.mark.slow
def test_detection_runs_in_ray_tasks_like_local(ray_local, model_dir, tmp_path, config_for,
                                                photo_pool):
    """Faces detected and aligned in the Ray CPU tasks: the local engine's boxes, crops and
    embeddings, a face-less image counted alike."""
    pool = photo_pool
    shutil.copy(pool / "astronaut.jpg", pool / "copy.jpg")
    config = config_for(pool, model_dir, detect="retinaface", shard_size=2)
    src = open_pool(pool)
    local = run(src, tmp_path / "local", config, "local")
    ray = run(src, tmp_path / "ray", config, "ray")
    assert ray.counts == local.counts
    assert local.counts["faces"] == 1 and local.counts["duplicates"] == 1
    assert local.counts["no_face"] == 1
    assert shard_files(tmp_path / "ray") == shard_files(tmp_path / "local")


@pytest.mark.slow
def test_the_ray_driver_neither_lists_nor_checks_duplicates(ray_local, setup, tmp_path,
                                                            monkeypatch):
    """The pool is listed in a Ray task, the readers take their keys from the run's key file,
    and the duplicate check runs in an actor: a driver that can neither list a pool nor look
    up a content id writes the local engine's shards and bad items all the same, and
    resumes."""
    pool, config = setup
    local = run(open_pool(pool), tmp_path / "local", config, "local")

    def refuse(*args):
        raise AssertionError("the driver listed the pool or looked up a content id")

    monkeypatch.setattr(PoolSource, "_listed", refuse)
    monkeypatch.setattr(ContentIds, "known", refuse)
    ray = run(open_pool(pool), tmp_path / "ray", config, "ray")
    assert ray.counts == local.counts and ray.bad == local.bad and len(ray.bad) == 1
    assert shard_files(tmp_path / "ray") == shard_files(tmp_path / "local")
    out = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        run(open_pool(pool), out, config, "ray", progress=stop_after(40))
    assert (out / "keys" / "offsets.npy").is_file()
    assert run(open_pool(pool), out, config, "ray").counts == local.counts
    assert shard_files(out) == shard_files(tmp_path / "local")
    assert not (out / "keys").exists()


@pytest.mark.slow
def test_model_actors_are_started_once_per_call(ray_local, setup, tmp_path, monkeypatch):
    pool, config = setup
    started = []
    start = ray_engine.start_model_actors

    def counting(*args, **kwargs):
        actors = start(*args, **kwargs)
        started.append(len(actors))
        return actors

    monkeypatch.setattr(ray_engine, "start_model_actors", counting)
    result = run(open_pool(pool), tmp_path / "ray", config, "ray", workers=2)
    assert len(result.shards) == 10 and started == [2]


@pytest.mark.slow
def test_interrupted_runs_resume_with_either_engine(ray_local, setup, tmp_path, monkeypatch):
    """A ray run stopped half way resumes with ray or with the local engine, and a local run
    stopped half way resumes with ray: each to the uninterrupted local run's files. The reads
    under way are let go, never cancelled (a cancel racing with a task's end can abort the
    driver inside Ray)."""
    pool, config = setup
    src = open_pool(pool)
    whole = run(src, tmp_path / "whole", config, "local")
    cancelled = []
    monkeypatch.setattr(ray_local, "cancel", lambda *a, **k: cancelled.append(a))

    for first, then in (("ray", "ray"), ("ray", "local"), ("local", "ray")):
        out = tmp_path / f"{first}-{then}"
        with pytest.raises(Interrupted):
            run(src, out, config, first, progress=stop_after(40))
        done = sorted(map(int, shard_files(out)[1]))
        assert done == list(range(len(done))) and 0 < len(done) < 10  # a prefix, as local
        resumed = run(src, out, config, then)
        assert resumed.counts == whole.counts, (first, then)
        assert shard_files(out) == shard_files(tmp_path / "whole"), (first, then)
    assert cancelled == []


KILLER = """
import json, os, signal, sys
from omnifer.pools import open_pool
from omnifer.pools.embed import embed_pool
from omnifer.pools.embed_config import EmbedConfig
cfg = EmbedConfig(**json.loads(sys.argv[1]))
def progress(done, total):
    if done >= 60:
        os.kill(os.getpid(), signal.SIGKILL)
embed_pool(open_pool(cfg.pool), sys.argv[2], config=cfg, workers=2, engine="ray",
           on_bad_files="skip", progress=progress)
"""


@pytest.mark.slow
def test_killed_ray_driver_resumes_like_local(ray_local, setup, tmp_path):
    """A ray driver killed (SIGKILL) on the running cluster: the resumed run (ray) has the
    uninterrupted local run's files and counts."""
    pool, config = setup
    src = open_pool(pool)
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    proc = subprocess.run([sys.executable, "-c", KILLER, json.dumps(asdict(config)),
                           str(tmp_path / "killed")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    done = sorted(map(int, shard_files(tmp_path / "killed")[1]))
    assert done == list(range(len(done))) and 0 < len(done) < 10
    resumed = run(src, tmp_path / "killed", config, "ray")
    whole = run(src, tmp_path / "whole", config, "local")
    assert resumed.counts == whole.counts
    assert shard_files(tmp_path / "killed") == shard_files(tmp_path / "whole")


@pytest.mark.slow
def test_worker_errors_are_one_line(ray_local, setup, tmp_path):
    """An error raised in a model actor (no model there) or on the driver (a bad item under
    ``error``) reaches the caller as the one-line error, and nothing is marked complete."""
    pool, config = setup
    src = open_pool(pool)
    nowhere = EmbedConfig(**{**asdict(config), "model": str(tmp_path / "nowhere")})
    with pytest.raises(OmniferError, match="no model at") as err:
        run(src, tmp_path / "a", nowhere, "ray")
    assert "\n" not in str(err.value)
    with pytest.raises(OmniferError, match="broken.jpg") as err:
        embed_pool(src, tmp_path / "b", config=config, engine="ray", workers=2,
                   on_bad_files="error")
    assert "\n" not in str(err.value)
    for out in (tmp_path / "a", tmp_path / "b"):
        assert shard_files(out)[1] == {}


def test_missing_ray_is_one_line(setup, tmp_path, monkeypatch):
    pool, config = setup
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(OmniferError, match=r"pip install 'omnifer\[ray\]'") as err:
        embed_pool(open_pool(pool), tmp_path / "run", config=config, engine="ray")
    assert "\n" not in str(err.value)


def test_engine_options_are_checked(setup, tmp_path):
    pool, config = setup
    with pytest.raises(OmniferError, match="local engine has no option 'block'") as err:
        embed_pool(open_pool(pool), tmp_path / "run", config=config,
                   engine_options={"block": 64})
    assert "\n" not in str(err.value)
    with pytest.raises(OmniferError, match="block is 0"):
        embed_pool(open_pool(pool), tmp_path / "run", config=config, engine="ray",
                   engine_options={"block": 0})
