"""Hub pieces without a workspace: repo ids and sizes, reading Hub-style Parquet with embedded
images as labeled data and as a pool, the upload order with a fake HfApi, resuming, tokens."""

import hashlib
import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from omnifer.errors import OmniferError
from omnifer.hub import PublishConfig, check_repo_id, parse_size

pytest.importorskip("datasets")


def test_repo_ids_sizes_and_options_are_checked():
    assert check_repo_id("hf://datasets/my-lab/fer.v2") == "my-lab/fer.v2"
    for bad in ("fer", "a/b/c", "/x", "org/", "org/na me", "org/x.git"):
        with pytest.raises(OmniferError, match="ORG/NAME"):
            check_repo_id(bad)
    assert parse_size("500MB") == 500 * 10**6 and parse_size("1GiB") == 2**30
    with pytest.raises(OmniferError, match="not a size"):
        parse_size("lots")
    with pytest.raises(OmniferError, match="manual or auto"):
        PublishConfig(gated="yes")
    with pytest.raises(OmniferError, match="drop --with-embeddings"):
        PublishConfig(as_references=True, with_index=True)


def png(value: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def hub_folder(tmp_path):
    """A Hub dataset as others publish it: `image` + a `label` ClassLabel in FER2013 order."""
    from datasets import ClassLabel, Dataset, Features, Image

    names = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    feats = Features({"image": Image(), "label": ClassLabel(names=names)})
    root = tmp_path / "fer2013-hub"
    (root / "data").mkdir(parents=True)
    for split, labels in (("train", [3, 6, 0]), ("test", [5])):
        rows = {"image": [{"bytes": png(10 * i + 1), "path": None} for i in range(len(labels))],
                "label": labels}
        Dataset.from_dict(rows, features=feats).to_parquet(
            str(root / "data" / f"{split}-00000-of-00001.parquet"))
    (root / "README.md").write_text("---\nlicense: other\n---\n")
    return root


def test_hub_layout_reads_as_labeled_data_and_as_a_pool(hub_folder):
    from omnifer.data import infer_format, read_labeled
    from omnifer.data.images import decode_image
    from omnifer.pools import open_pool

    assert infer_format(hub_folder) == "hub"
    data = read_labeled(hub_folder)  # the train split only
    assert len(data) == 3 and data.sources == ("fer2013-hub",)
    assert [data.expressions[i] for i in data.table["expression"]] == [
        "happiness", "neutral", "anger"]
    assert all("::" in ref for ref in data.table["image"])
    assert decode_image(data.table["image"][1])[0, 0].tolist() == [11, 11, 11]
    one = read_labeled(hub_folder / "data" / "test-00000-of-00001.parquet")  # parquet format
    assert [one.expressions[i] for i in one.table["expression"]] == ["surprise"]
    pool = open_pool(hub_folder)
    items = list(pool.read(pool.keys()))
    assert len(items) == 4 and all(isinstance(it.data, bytes) for it in items)
    assert pool.name == "parquet" and pool.keys()[0] == "data/test-00000-of-00001.parquet:0"


class FakeApi:
    """An HfApi stand-in that keeps the repo's files in memory and can fail an upload."""

    def __init__(self, fail_at=None):
        self.files, self.calls, self.fail_at, self.commits = {}, [], fail_at, 0

    def create_repo(self, repo_id, *, repo_type, private, exist_ok):
        self.calls.append(("create_repo", repo_id, repo_type, private, exist_ok))
        return f"https://huggingface.co/datasets/{repo_id}"

    def update_repo_settings(self, repo_id, *, repo_type, gated):
        self.calls.append(("update_repo_settings", repo_id, repo_type, gated))

    def create_branch(self, repo_id, *, repo_type, branch, exist_ok):
        self.calls.append(("create_branch", repo_id, repo_type, branch))

    def list_repo_tree(self, repo_id, *, repo_type, revision, recursive):
        return [SimpleNamespace(path=p, size=len(d), blob_id="x",
                                lfs={"sha256": hashlib.sha256(d).hexdigest()})
                for p, d in self.files.items()]

    def upload_folder(self, *, repo_id, repo_type, folder_path, revision, allow_patterns,
                      commit_message):
        self.commits += 1
        if self.fail_at == self.commits:
            raise ConnectionError("connection reset by peer")
        for f in allow_patterns:
            self.files[f] = (Path(folder_path) / f).read_bytes()
        self.calls.append(("upload_folder", repo_id, repo_type, revision, list(allow_patterns)))

    def upload_file(self, *, path_or_fileobj, path_in_repo, repo_id, repo_type, revision,
                    commit_message):
        self.files[path_in_repo] = Path(path_or_fileobj).read_bytes()
        self.calls.append(("upload_file", repo_id, repo_type, revision, path_in_repo))
        return SimpleNamespace(oid="c0ffee", commit_url="https://hf.co/commit/c0ffee")


def test_upload_puts_the_card_last_and_a_rerun_uploads_the_rest(hub_folder):
    from omnifer.hub.upload import upload

    api = FakeApi(fail_at=2)
    with pytest.raises(OmniferError, match="run the same command again"):
        upload(hub_folder, "lab/fer", api=api, gated="manual", revision="v1",
               files_per_commit=1)
    assert "README.md" not in api.files and len(api.files) == 1  # interrupted, no card
    api.fail_at = None
    done = upload(hub_folder, "lab/fer", api=api, gated="manual", revision="v1",
                  files_per_commit=1)
    assert done["commit"] == "c0ffee" and done["skipped"] == 1
    assert done["uploaded"] == ["data/train-00000-of-00001.parquet"]
    assert api.calls[-1] == ("upload_file", "lab/fer", "dataset", "v1", "README.md")
    assert ("update_repo_settings", "lab/fer", "dataset", "manual") in api.calls
    assert ("create_branch", "lab/fer", "dataset", "v1") in api.calls
    assert sorted(api.files) == ["README.md", "data/test-00000-of-00001.parquet",
                                 "data/train-00000-of-00001.parquet"]


def test_no_token_is_one_line_saying_where_to_put_one(monkeypatch):
    import huggingface_hub

    from omnifer.hub.upload import make_api

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(OmniferError, match="set HF_TOKEN or run `hf auth login`"):
        make_api()


def test_hub_repo_ids_go_through_snapshot_download(monkeypatch, hub_folder):
    import huggingface_hub

    from omnifer.pipeline import resolve
    from omnifer.workspace import Workspace

    seen = {}

    def fake(repo_id, **kw):
        seen.update(repo_id=repo_id, **kw)
        return str(hub_folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    data = resolve.read_data(Workspace(hub_folder), "hf://datasets/lab/fer2013@v1")
    assert len(data) == 3
    assert seen["repo_id"] == "lab/fer2013" and seen["repo_type"] == "dataset"
    assert seen["revision"] == "v1"


def test_every_install_configuration_gets_exactly_one_faiss():
    from omnifer.config import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def faiss(reqs):
        return {r.split(">")[0].split("=")[0].split("[")[0].strip() for r in reqs
                if r.lower().startswith("faiss")}

    assert not faiss(project["dependencies"])
    assert faiss(extras["cpu"]) == {"faiss-cpu"} and faiss(extras["gpu"]) == {"faiss-gpu"}
    assert all(not faiss(reqs) for name, reqs in extras.items() if name not in ("cpu", "gpu"))
    makefile = (Path(__file__).parents[1] / "Makefile").read_text()
    assert "FAISS ?= cpu" in makefile and "'.[$(FAISS),dev]'" in makefile
