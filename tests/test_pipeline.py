"""The Python API: every stage from ``omnifer.pipeline`` without click, typed run records,
configs from TOML files, moved workspaces, and input resolution errors."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import build_workspace

from omnifer import pipeline
from omnifer.errors import OmniferError
from omnifer.records import IndexRun, MineRun, SynthRun, TrainRun
from omnifer.workspace import Workspace

pytest.importorskip("torch")
pytest.importorskip("faiss")
pytestmark = pytest.mark.slow  # every stage end to end


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """synth -> train -> index -> mine, all through the Python API."""
    return build_workspace(tmp_path_factory.mktemp("api") / "ws")


def test_stages_return_typed_records_and_print_nothing(ws, capsys):
    s, t, i, m = ws["synth"], ws["train"], ws["index"], ws["mine"]
    assert isinstance(s, SynthRun) and s.labeled.is_file() and s.pool.is_dir()
    assert isinstance(t, TrainRun) and t.ref.startswith("train/") and len(t.members) == 1
    assert t.config.backbone == "convnet" and t.config.input_size == 32
    assert isinstance(i, IndexRun) and i.model == t.member() and i.counts["indexed"] > 0
    assert isinstance(m, MineRun) and m.dataset.is_file() and m.config.threshold == -1
    assert m.inputs["index"]["run"] == i.ref and m.counts["mined"] > 0
    assert capsys.readouterr().out == ""
    # defaults resolve to the latest runs; the mined set is the trainer's input
    from omnifer.data import LabeledSet

    assert len(LabeledSet.load(m.dataset)) == m.counts["mined"]


def test_manifest_outputs_are_relative_and_records_round_trip(ws):
    m = ws["mine"]
    raw = json.loads((m.path / "manifest.json").read_text())
    assert not raw["outputs"]["dataset"].startswith("/")
    assert raw["config"]["labeled"] == "data/labeled.toml"  # relative to the workspace
    again = MineRun.from_manifest(m.path, raw)
    assert again == m
    assert again.to_manifest()["outputs"] == raw["outputs"]


def test_moved_workspace_keeps_working(ws, tmp_path, run_cli):
    from omnifer.data import LabeledSet
    from omnifer.mining import MineConfig

    moved = tmp_path / "moved"
    shutil.copytree(ws["root"], moved)
    shutil.rmtree(ws["root"] / ".omnifer" / "cache")  # the copy must not need the original's
    code, out, err = run_cli("-w", moved, "status")
    assert code == 0 and "mine/" in out, err
    latest = pipeline.resolve.run(Workspace(moved), None, "mine")
    assert latest.dataset.is_relative_to(moved) and latest.dataset.is_file()
    assert all(str(moved) in p for p in LabeledSet.load(latest.dataset).table["image"])
    index = pipeline.resolve.run(Workspace(moved), None, "index")
    assert index.pool.is_relative_to(moved) and index.model.is_relative_to(moved)
    again = pipeline.mine(moved, ws["mine_config"])
    assert again.counts["mined"] == ws["mine"].counts["mined"]


def test_moved_with_mv(ws, tmp_path):
    """``mv`` of a whole workspace: status and the records follow it."""
    import subprocess

    copy, moved = tmp_path / "a", tmp_path / "b"
    shutil.copytree(ws["root"], copy)
    subprocess.run(["mv", str(copy), str(moved)], check=True)
    w = Workspace(moved)
    assert [r["status"] for r in w.lineage()] == ["complete"] * 4
    for stage in ("synth", "train", "index", "mine"):
        rec = pipeline.resolve.run(w, None, stage)
        paths = [v for k, v in rec.run.outputs.items() if isinstance(v, str)]
        assert paths and all(p.startswith(str(moved)) and Path(p).exists() for p in paths)


def test_index_runs_without_feature_norms(ws, tmp_path):
    """An index run whose shards lack feature norms (omnifer 0.1): mining says it checked the
    neighbourhood only, and the next index run embeds those faces again, with norms."""
    import pyarrow.parquet as pq

    from omnifer.mining import MineConfig
    from omnifer.pools.config import IndexConfig

    root = tmp_path / "old"
    shutil.copytree(ws["root"], root)
    old = pipeline.resolve.run(Workspace(root), None, "index")
    for path in [old.ids, *old.run.outputs["shards"]]:
        table = pq.read_table(path)
        pq.write_table(table.drop_columns(["feature_norm"]), path)
    m = pipeline.mine(root, MineConfig(threshold=-1, k=3, leak_threshold=1.0, device="cpu"))
    notes = " ".join(m.run.manifest["summary"])
    assert f"{old.ref} has no feature norms" in notes and "run omnifer index again" in notes
    again = pipeline.index(root, IndexConfig(workers=0, device="cpu"), pool=old.pool)
    assert again.counts["reused"] == 0 and again.counts["faces"] == old.counts["indexed"]
    norms = pq.read_table(again.ids).column("feature_norm").to_numpy()
    assert np.isfinite(norms).all() and (norms > 0).all()
    m = pipeline.mine(root, MineConfig(threshold=-1, k=3, leak_threshold=1.0, device="cpu"))
    assert "no feature norms" not in " ".join(m.run.manifest["summary"])
    assert np.isfinite(m.run.manifest["norm_cut"])


def test_without_a_synth_run_mine_and_distill_use_the_recorded_labeled_data(ws, tmp_path):
    """A user's own data (no synth run): mine and audit take the labeled set the model was
    trained on, distill --with-labeled the one the mined set was mined with; with neither, one
    line."""
    from omnifer.distill import DistillConfig
    from omnifer.pools.config import IndexConfig

    root = tmp_path / "own"
    shutil.copytree(ws["root"], root)
    own = root / "data" / "mine.toml"  # the labeled data under a name of the user's
    shutil.copy(root / "data" / "labeled.toml", own)
    shutil.rmtree(root / ".omnifer" / "runs" / "synth")
    t = pipeline.train(root, ws["train"].config, data=own)
    i = pipeline.index(root, IndexConfig(workers=0, device="cpu"), pool=ws["index"].pool)
    m = pipeline.mine(root, ws["mine_config"], exclude=[root / "data" / "test.toml"])
    here = Workspace(root)
    assert i.model == t.member()
    assert here.locate(m.run.config["labeled"]).resolve() == own.resolve()
    d = pipeline.distill(root, DistillConfig(images_per_class=1, with_labeled=True,
                                             device="cpu"), source=m)
    assert here.locate(d.run.config["labeled"]).resolve() == own.resolve()
    a = pipeline.audit(root, test=[])
    assert here.locate(a.run.config["data"]).resolve() == own.resolve()
    t.run.path.joinpath("manifest.json").unlink()  # the model's run is gone: nothing recorded
    with pytest.raises(OmniferError, match="no --labeled given and no synth run") as err:
        pipeline.mine(root, ws["mine_config"], exclude=[root / "data" / "test.toml"])
    assert "\n" not in str(err.value)


def test_manifests_of_the_previous_layout_still_load(ws, tmp_path):
    """Absolute output paths and top-level configs (the earlier manifest form) load; a
    manifest that lacks an output this version needs is one line naming the run and the fix."""
    from omnifer.records import record_of
    from omnifer.workspace import Run

    m = ws["mine"]
    old = json.loads((m.path / "manifest.json").read_text())
    old["outputs"] = {k: str(v) for k, v in m.run.outputs.items()}
    old["config"] = {"mine": {"threshold": 0.9, "k": 10}, "index": "x", "model": "/abs/model"}
    rec = MineRun.from_manifest(m.path, old)
    assert rec.dataset == m.dataset and rec.config.threshold == 0.9
    del old["outputs"]["dataset"]
    with pytest.raises(OmniferError, match=r"run mine/\S+ has no 'dataset'.*run `omnifer mine` again"):
        MineRun.from_manifest(m.path, old)
    again = record_of(Run(ws["train"].path))
    assert isinstance(again, TrainRun) and again.members == ws["train"].members


def test_ensemble_model_needs_a_member(ws, tmp_path):
    from omnifer.pipeline.resolve import model_dir

    root = ws["root"]
    t = ws["train"]
    record = TrainRun(**{**t.__dict__, "members": (t.members[0], t.members[0])})
    with pytest.raises(OmniferError, match="ensemble of 2 members.*@0"):
        record.member()
    assert record.member(1) == t.members[0]
    with pytest.raises(OmniferError, match="members 0 .. 1, not 5"):
        record.member(5)
    assert model_dir(Workspace(root), f"{t.ref}@0") == t.members[0].resolve()
    with pytest.raises(OmniferError, match=r"@x: name a member \(@0\), the best member"):
        model_dir(Workspace(root), f"{t.ref}@x")
    assert model_dir(Workspace(root), f"{t.ref}@best") == t.model.resolve()
    with pytest.raises(OmniferError, match=r"has no generations .*--generations 1"):
        model_dir(Workspace(root), f"{t.ref}@g0")


def test_incomplete_runs_are_refused(ws):
    w = Workspace(ws["root"])
    run = w.start_run("index", config={"never": "finished"}, resume=False)
    run.fail("killed")
    with pytest.raises(OmniferError, match="is failed; finish it"):
        pipeline.resolve.run(w, run.ref, "index")
    with pytest.raises(OmniferError, match="is a mine run; pass a train run"):
        pipeline.resolve.run(w, ws["mine"], "train")


def test_config_files_and_flags_fill_one_config(tmp_path):
    from omnifer.mining import MineConfig

    path = tmp_path / "mine.toml"
    path.write_text("[mine]\nthreshold = 0.85\nk = 5\n")
    cfg = MineConfig.from_toml(path).replace(k=7, margin=None)
    assert (cfg.threshold, cfg.k, cfg.margin) == (0.85, 7, MineConfig().margin)
    path.write_text("thresold = 0.8\n")
    with pytest.raises(OmniferError, match="unknown mine option.*thresold"):
        MineConfig.from_toml(path)
    with pytest.raises(OmniferError, match="unknown device 'gpu'"):
        MineConfig(device="gpu")


def test_cli_config_file_is_read(ws, run_cli, tmp_path):
    cfg = tmp_path / "mine.toml"
    cfg.write_text("threshold = -1\nk = 3\nscore = 'max'\nleak_threshold = 1.0\ndevice = 'cpu'\n")
    out = run_cli.json("-q", "-w", ws["root"], "mine", "--config", cfg, "--k", "2")
    rec = pipeline.resolve.run(Workspace(ws["root"]), out["run"], "mine")
    assert (rec.config.k, rec.config.score, rec.config.threshold) == (2, "max", -1)


def test_importing_the_pipeline_is_cheap():
    import subprocess

    code = ("import sys, omnifer.pipeline, omnifer.records, omnifer.cli.main; "
            "print(sorted(m for m in ('torch', 'faiss', 'pandas', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_labeled_and_pool_decoding_give_identical_pixels(tmp_path):
    """One decoder: a JPEG read as labeled data and as a pool item gives the same pixels."""
    from PIL import Image

    from omnifer.data.cache import decode_one
    from omnifer.data.images import resize
    from omnifer.pools.chunks import decode
    from omnifer.pools.source import PoolItem

    rng = np.random.default_rng(0)
    path = tmp_path / "face.jpg"
    Image.fromarray(rng.integers(0, 255, (70, 50, 3), dtype=np.uint8)).save(path, quality=90)
    labeled = decode_one(str(path), 48)
    pooled, reason = decode(PoolItem(key="face.jpg", data=path.read_bytes()))
    assert reason is None
    assert np.array_equal(labeled, resize(pooled, 48))


def test_python_api_walk_through_runs(tmp_path, monkeypatch):
    """docs/python-api.md, executed block by block in a fresh folder."""
    import re
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "python-api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    for block in blocks:
        exec(compile(block, "docs/python-api.md", "exec"), scope)  # noqa: S102
    assert scope["report"].metrics.is_file() and scope["scored"].evaluation["results"]
