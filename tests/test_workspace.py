import json

import pytest

from omnifer.errors import OmniferError
from omnifer.workspace import Workspace


def test_run_manifest_fields(tmp_path):
    ws = Workspace(tmp_path)
    (tmp_path / "in.txt").write_text("x")
    run = ws.start_run("train", config={"lr": 0.1}, inputs={"data": tmp_path / "in.txt"}, seed=3)
    m = json.loads((run.path / "manifest.json").read_text())
    for key in ("stage", "omnifer_version", "config", "inputs", "packages", "device", "seed",
                "counts", "timings", "status"):
        assert key in m
    assert m["status"] == "running" and m["seed"] == 3
    assert run.path.parent.parent == tmp_path / ".omnifer" / "runs"
    assert m["inputs"]["data"]["fingerprint"]
    run.complete(outputs={"model": "model.safetensors"}, counts={"samples": 10})
    m = json.loads((run.path / "manifest.json").read_text())
    assert m["status"] == "complete" and m["counts"] == {"samples": 10}
    assert run.output("model") == run.path / "model.safetensors"


def test_failed_run_is_marked_and_resumed_with_same_config(tmp_path):
    ws = Workspace(tmp_path)
    with pytest.raises(ValueError):
        with ws.start_run("index", config={"k": 1}):
            raise ValueError("boom")
    failed = ws.runs("index")[0]
    assert failed.status == "failed" and "boom" in failed.manifest["error"]
    again = ws.start_run("index", config={"k": 1})
    assert again.path == failed.path and again.manifest["resumed"] == 1
    other = ws.start_run("index", config={"k": 2})
    assert other.path != failed.path


def test_latest_resolution_and_explicit_refs(tmp_path):
    ws = Workspace(tmp_path)
    with pytest.raises(OmniferError, match="no complete train run"):
        ws.resolve(None, "train")
    a = ws.start_run("train", config={"i": 1}, resume=False)
    a.complete()
    b = ws.start_run("train", config={"i": 2}, resume=False)
    b.complete()
    running = ws.start_run("train", config={"i": 3}, resume=False)  # never completes
    assert ws.latest("train").run_id == b.run_id
    assert ws.resolve("latest", "train").run_id == b.run_id
    assert ws.resolve(a.run_id, "train").run_id == a.run_id
    assert ws.resolve(f"train/{a.run_id}", "mine").run_id == a.run_id
    assert ws.resolve(str(a.path), "train").run_id == a.run_id
    assert ws.latest("train", where=lambda r: r.config["i"] == 1).run_id == a.run_id
    assert running.status == "running"
    with pytest.raises(OmniferError, match="omnifer status"):
        ws.resolve("nope", "train")


def test_lineage_links_runs_through_inputs(tmp_path):
    ws = Workspace(tmp_path)
    with ws.start_run("train", config={}) as t:
        (t.path / "model.bin").write_bytes(b"m")
        t.complete(outputs={"model": "model.bin"})
    with ws.start_run("index", config={}, inputs={"model": t.path / "model.bin"}) as i:
        pass
    with ws.start_run("mine", config={}, inputs={"index": i}):
        pass
    rows = {r["run"]: r for r in ws.lineage()}
    assert rows[f"index/{i.run_id}"]["inputs"] == [f"train/{t.run_id}"]
    assert rows[f"mine/{ws.latest('mine').run_id}"]["inputs"] == [f"index/{i.run_id}"]
    assert all(r["status"] == "complete" for r in rows.values())
