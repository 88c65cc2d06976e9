"""``omnifer publish`` on a tiny workspace: the folder loads with ``datasets``, the card parses,
omnifer reads it back as the same sample table and trains on it, the upload goes through an
injected HfApi, the token is never written, references rebuild from a pool, bad input is one
line with nothing written."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import build_workspace
from test_hub import FakeApi

from omnifer import pipeline
from omnifer.hub import PublishConfig
from omnifer.pools.config import IndexConfig

pytest.importorskip("torch")
pytest.importorskip("faiss")
pytestmark = pytest.mark.slow  # a whole tiny workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    from omnifer.distill import DistillConfig

    built = build_workspace(tmp_path_factory.mktemp("hub") / "ws")
    built["distill"] = pipeline.distill(built["root"], DistillConfig(
        images_per_class=1, device="cpu"))
    return built


def test_published_mined_set_loads_with_datasets_and_its_card_parses(ws, tmp_path):
    from datasets import ClassLabel, Image, List, load_dataset
    from huggingface_hub import DatasetCard

    m = ws["mine"]
    rec = pipeline.publish(ws["root"], PublishConfig(max_shard_size="20KB", license="cc-by-4.0"),
                           run=m.ref, to_dir=tmp_path / "pub")
    folder = tmp_path / "pub"
    shards = sorted(p.name for p in (folder / "data").iterdir())
    assert len(shards) > 1 and shards[0] == f"train-00000-of-{len(shards):05d}.parquet"
    assert rec.repo is None and rec.commit is None and "README.md" in rec.files
    ds = load_dataset(str(folder))["train"]
    f = ds.features
    assert isinstance(f["image"], Image) and isinstance(f["expression"], ClassLabel)
    assert f["expression"].names[:7] == ["neutral", "anger", "disgust", "fear", "happiness",
                                          "sadness", "surprise"]
    assert f["valence"].dtype == "float32" and f["score"].dtype == "float32"
    assert isinstance(f["neighbours"], List) and f["votes"].dtype == "int32"
    assert "label" not in f and len(ds) == m.counts["mined"]
    assert ds[0]["image"].size == (48, 48)
    card = DatasetCard.load(folder / "README.md")
    meta = card.data.to_dict()
    assert meta["license"] == "cc-by-4.0" and meta["annotations_creators"] == ["machine-generated"]
    assert meta["task_categories"] == ["image-classification"]
    assert meta["size_categories"] == ["n<1K"] and "pseudo-labeled" in meta["tags"]
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-*"}]
    assert meta["dataset_info"]["splits"] == [
        {"name": "train", "num_examples": len(ds),
         "num_bytes": sum(p.stat().st_size for p in (folder / "data").iterdir())}]
    assert "pool" in meta["source_datasets"][0]
    for text in ("Leak guard", "threshold", "Estimated precision", "fingerprint", "Privacy",
                 "omnifer 0.1.0"):
        assert text in card.text, text


def test_published_folder_reads_back_as_the_same_sample_table(ws, tmp_path):
    from omnifer.data import LabeledSet, read_labeled

    pipeline.publish(ws["root"], run=ws["mine"].ref, to_dir=tmp_path / "pub")
    back, orig = read_labeled(tmp_path / "pub"), LabeledSet.load(ws["mine"].dataset)
    pd.testing.assert_frame_equal(back.table.drop(columns="image"),
                                  orig.table.drop(columns="image"))
    assert (back.expressions, back.aus, back.sources) == (orig.expressions, orig.aus,
                                                          orig.sources)


def test_training_on_the_published_folder_equals_training_on_the_run(ws, tmp_path):
    from omnifer.train import TrainConfig

    pipeline.publish(ws["root"], run=ws["mine"].ref, to_dir=tmp_path / "pub")
    config = TrainConfig(backbone="convnet", input_size=32, epochs=1, device="cpu", seed=3)
    a = pipeline.train(ws["root"], config, extra=[ws["mine"].ref], resume=False)
    b = pipeline.train(ws["root"], config, extra=[str(tmp_path / "pub")], resume=False)
    assert a.counts == b.counts
    assert json.dumps(a.validation) == json.dumps(b.validation)  # NaN-safe equality


def test_synth_and_distill_runs_publish_with_their_splits(ws, tmp_path):
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    s = pipeline.publish(ws["root"], run=ws["synth"].ref, to_dir=tmp_path / "s")
    assert set(s.counts) == {"train", "test"}
    ds = load_dataset(str(tmp_path / "s"))
    assert {k: len(v) for k, v in ds.items()} == s.counts
    d = pipeline.publish(ws["root"], run=ws["distill"].ref, dry_run=True)
    assert d.folder == d.path / "hub" and d.counts == {"train": ws["distill"].counts["distilled"]}
    card = DatasetCard.load(d.folder / "README.md").text
    assert "Distillation: method rded, from" in card
    assert f"primitive model agreement {ws['distill'].agreement:.3f}" in card


def test_upload_goes_through_the_api_and_the_token_is_never_written(ws, monkeypatch, tmp_path):
    secret = "hf_NeverWriteThisToken0123456789"
    monkeypatch.setenv("HF_TOKEN", secret)
    api = FakeApi()
    config = PublishConfig(repo="my-lab/tiny-mined", private=True, gated="auto",
                           commit_message="first", with_embeddings=True, with_index=True)
    rec = pipeline.publish(ws["root"], config, run=ws["mine"].ref, api=api)
    assert rec.commit == "c0ffee" and rec.repo == "my-lab/tiny-mined"
    assert api.calls[0] == ("create_repo", "my-lab/tiny-mined", "dataset", True, True)
    assert api.calls[1] == ("update_repo_settings", "my-lab/tiny-mined", "dataset", "auto")
    assert api.calls[-1][-1] == "README.md"
    assert sorted(api.files) == sorted(rec.files)
    assert {"index/index.faiss", "index/index.json", "index/ids.parquet"} <= set(rec.files)
    from datasets import load_dataset

    emb = load_dataset(str(rec.folder), "embeddings")["train"]
    assert len(emb) == rec.counts["train"] and len(emb[0]["embedding"]) > 0
    again = pipeline.publish(ws["root"], config, run=ws["mine"].ref, api=api)
    assert again.uploaded == 0 and again.skipped == len(rec.files) - 1  # all there already
    for path in Path(ws["root"]).rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_bad_input_is_one_line_and_writes_nothing(ws, run_cli, monkeypatch, tmp_path):
    import huggingface_hub

    root, m = ws["root"], ws["mine"]
    before = sorted(p.name for p in (root / ".omnifer" / "runs").iterdir())
    out = tmp_path / "never"
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    cases = [
        ((m.ref, "--repo", "not-a-repo"), "ORG/NAME"),
        ((ws["train"].ref, "--to-dir", out), "holds no dataset"),
        ((m.ref, "--as-references", "--to-dir", out), "not stable keys"),
        ((m.ref, "--repo", "lab/mined"), "set HF_TOKEN or run `hf auth login`"),
        ((ws["distill"].ref, "--with-index", "--to-dir", out), "apply to mined sets"),
    ]
    for args, message in cases:
        code, stdout, err = run_cli("-w", root, "publish", *args)
        assert code != 0 and message in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    assert sorted(p.name for p in (root / ".omnifer" / "runs").iterdir()) == before


def test_references_publish_no_pixels_and_rebuild_from_the_pool(ws, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from omnifer.data import LabeledSet, read_labeled

    files = sorted(Path(ws["synth"].pool).rglob("*.jpg"))
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"image": [f.read_bytes() for f in files]}), pool)
    root = tmp_path / "ws"
    shutil.copytree(ws["root"], root)
    pipeline.index(root, IndexConfig(workers=0, device="cpu"), pool=pool)
    m = pipeline.mine(root, ws["mine_config"])
    rec = pipeline.publish(root, PublishConfig(as_references=True), run=m.ref,
                           to_dir=tmp_path / "refs")
    table = pq.read_table(next((tmp_path / "refs" / "data").glob("*.parquet")))
    assert "image" not in table.column_names and table["pool_source"][0].as_py() == "parquet"
    assert rec.references and "--pool" in (tmp_path / "refs" / "README.md").read_text()
    done = pipeline.rebuild(tmp_path / "refs", pool=pool, to_dir=tmp_path / "rebuilt")
    assert done["rows"] == m.counts["mined"] and done["dropped"] == 0
    back, orig = read_labeled(tmp_path / "rebuilt"), LabeledSet.load(m.dataset)
    pd.testing.assert_frame_equal(back.table.drop(columns="image"),
                                  orig.table.drop(columns="image"))
    assert np.array_equal(back.table["sample_id"], orig.table["sample_id"])
