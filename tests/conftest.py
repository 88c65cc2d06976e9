import json

import pytest


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory):
    """One tiny synthetic benchmark shared by the tests that only read it."""
    from omnifer.synth import generate

    out = tmp_path_factory.mktemp("synth") / "tiny"
    return generate(out, preset="tiny", seed=0, size=48)


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Run the ``omnifer`` entry point in-process: returns (exit code, stdout, stderr)."""
    from omnifer.cli.main import main

    def run(*args, env=None):
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    run.json = lambda *args: json.loads(run("--json", *args)[1])
    return run


@pytest.fixture(scope="session")
def omnifer_steps():
    """Run ``omnifer`` commands in a workspace, quietly, failing on a non-zero exit."""
    from omnifer.cli.main import main

    def run(ws, *steps):
        for args in steps:
            try:
                main(["-q", "-w", str(ws), *map(str, args)])
            except SystemExit as exc:
                assert exc.code in (0, None), f"omnifer {args} exited with {exc.code}"
        return ws

    return run


@pytest.fixture(scope="module")
def mined_ws(tiny_synth, tmp_path_factory, omnifer_steps):
    """A workspace (one per test module) with a model (convnet, 32 px, 1 epoch), an index of
    the tiny pool and a mine run over it that keeps every pool face."""
    pytest.importorskip("torch")
    pytest.importorskip("faiss")
    return omnifer_steps(
        tmp_path_factory.mktemp("mined-ws"),
        ["train", "--data", tiny_synth.labeled_toml, "--backbone", "convnet", "--size", "32",
         "--epochs", "1", "--device", "cpu"],
        ["index", tiny_synth.pool, "--workers", "0", "--device", "cpu"],
        ["mine", "--labeled", tiny_synth.labeled_toml, "--threshold", "-1", "--k", "3",
         "--score", "max", "--device", "cpu", "--no-calibrate", "--ood-quantile", "0"])


@pytest.fixture
def one_thread():
    """One torch thread for the test, so that float results do not depend on the machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A small untrained convnet checkpoint (32 px) for embedding tests."""
    pytest.importorskip("torch")
    from omnifer.models import ModelConfig, build_model, save_checkpoint

    out = tmp_path_factory.mktemp("model")
    save_checkpoint(build_model(ModelConfig(backbone="convnet", input_size=32), seed=0), out)
    return out


@pytest.fixture
def pool(tiny_synth, tmp_path):
    """A copy of the tiny synthetic pool (60 JPEGs in folders) that tests may change."""
    import shutil

    dst = tmp_path / "pool"
    shutil.copytree(tiny_synth.pool, dst)
    return dst


@pytest.fixture
def config_for():
    """``config_for(pool, model_dir, **changes)``: a small CPU embedding config."""
    from omnifer.pools.embed_config import EmbedConfig

    def make(pool, model_dir, **kw):
        base = dict(pool=str(pool), source="folder", model=str(model_dir),
                    model_fingerprint="test", input_size=32, shard_size=16, batch_size=8,
                    device="cpu")
        return EmbedConfig(**{**base, **kw})

    return make


def build_workspace(root):
    """synth -> train -> index -> mine on the tiny preset, all through the Python API; every
    face is mined (no threshold, no leak guard), so later stages always have data."""
    from omnifer import pipeline
    from omnifer.mining import MineConfig
    from omnifer.pools.config import IndexConfig
    from omnifer.train import TrainConfig

    mine = MineConfig(threshold=-1, k=3, score="max", leak_threshold=1.0, device="cpu",
                      calibrate=False, ood_quantile=0)
    s = pipeline.synth(root, pipeline.SynthOptions(preset="tiny", size=48), out=root / "data")
    t = pipeline.train(root, TrainConfig(backbone="convnet", input_size=32, epochs=1,
                                         device="cpu"))
    i = pipeline.index(root, IndexConfig(workers=0, device="cpu"), pool=s.pool)
    m = pipeline.mine(root, mine)
    return {"root": root, "synth": s, "train": t, "index": i, "mine": m, "mine_config": mine}


@pytest.fixture
def photo_pool(tmp_path):
    """A folder pool of real photos: scikit-image's astronaut (one face) and a gray image
    (none), for face detection."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("retinaface.weights")
    data = pytest.importorskip("skimage.data")
    from PIL import Image

    pool = tmp_path / "photos"
    pool.mkdir()
    Image.fromarray(data.astronaut()).save(pool / "astronaut.jpg", quality=95)
    Image.new("RGB", (200, 200), (128, 128, 128)).save(pool / "gray.png")
    return pool
