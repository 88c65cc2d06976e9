"""Runs under real faults: changed inputs on resume, malformed manifests, SIGKILL and SIGTERM,
two processes at once, references to unfinished runs, permissions, copied workspaces, and
the JSON, hints and one-line errors of the CLI."""

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from omnifer.artifacts import atomic_write_json
from omnifer.errors import OmniferError
from omnifer.pipeline import resolve
from omnifer.workspace import Run, Workspace

ROOT = Path(__file__).resolve().parents[1]


def strict_json(text):
    """json.loads that refuses NaN and Infinity, as every other JSON reader does."""
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON output"))


def start(code, *args, **kwargs):
    """A Python process running ``code`` (with omnifer importable)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            **kwargs)


def without_root_override():
    """preexec_fn: as root, give up the capabilities that ignore file permissions, so that a
    read-only folder is read-only for the command too (PR_CAPBSET_DROP; they go at exec)."""
    if os.geteuid() == 0:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            assert libc.prctl(24, cap, 0, 0, 0) == 0, os.strerror(ctypes.get_errno())


def wait_for(predicate, timeout=30.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


OPEN_AND_SLEEP = """
    import logging, sys, time
    from omnifer.workspace import Workspace
    logging.basicConfig(level=logging.WARNING)
    run = Workspace(sys.argv[1]).start_run("train", config={"epochs": 8})
    print(run.run_id, flush=True)
    time.sleep(float(sys.argv[2]))
"""


# ---------------------------------------------------------------- 2: resume and changed inputs

def test_resume_needs_the_same_input_content(tmp_path, caplog):
    ws = Workspace(tmp_path / "ws")
    data = tmp_path / "labels.csv"
    data.write_text("image,expression\na.jpg,happy\n")
    killed = ws.start_run("train", config={"epochs": 8}, inputs={"data": data})
    killed.fail("killed")
    again = ws.start_run("train", config={"epochs": 8}, inputs={"data": data})
    assert again.run_id == killed.run_id and again.manifest["resumed"] == 1
    again.fail("killed")
    data.write_text("image,expression\na.jpg,sad\n")  # same path, other content
    with caplog.at_level(logging.WARNING):
        new = ws.start_run("train", config={"epochs": 8}, inputs={"data": data})
    assert new.run_id != killed.run_id
    assert f"the inputs of train/{killed.run_id} changed since (data)" in caplog.text
    assert f"starting a new run train/{new.run_id}" in caplog.text
    assert new.manifest["inputs"]["data"]["fingerprint"] != \
        Run(killed.path).manifest["inputs"]["data"]["fingerprint"]


# ---------------------------------------------------------------- 4: malformed manifests

def test_malformed_manifests_are_skipped_with_a_warning(tmp_path, run_cli, caplog):
    ws = Workspace(tmp_path / "ws")
    with ws.start_run("synth", config={}, resume=False) as good:
        pass
    bad = {"empty": b"{}", "list": b"[]", "bytes": bytes(range(256)) * 4,
           "null": json.dumps({**good.manifest, "run_id": "null", "created": None}).encode()}
    for name, content in bad.items():
        (ws.runs_dir / "synth" / name).mkdir()
        (ws.runs_dir / "synth" / name / "manifest.json").write_bytes(content)
    with caplog.at_level(logging.WARNING):
        code, out, err = run_cli("-w", ws.root, "status")
        assert code == 0, err
        assert good.ref in out and out.count("synth/") == 1
        assert ws.latest("synth").run_id == good.run_id
    for name in bad:
        assert str(ws.runs_dir / "synth" / name / "manifest.json") in caplog.text


# ---------------------------------------------------------------- 6: killed runs, SIGTERM

def test_killed_run_shows_stale(tmp_path, run_cli):
    proc = start(OPEN_AND_SLEEP, tmp_path / "ws", 60)
    run_id = proc.stdout.readline().strip()
    manifest = json.loads((tmp_path / "ws/.omnifer/runs/train" / run_id / "manifest.json")
                          .read_text())
    assert manifest["pid"] == proc.pid and manifest["host"]
    assert run_cli.json("-w", tmp_path / "ws", "status")["runs"][0]["status"] == "running"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (row,) = run_cli.json("-w", tmp_path / "ws", "status")["runs"]
    assert row["status"] == "stale"
    code, out, _ = run_cli("-w", tmp_path / "ws", "status")
    assert f"train/{run_id}" in out and "stale" in out


def test_sigterm_marks_the_run_failed(tmp_path):
    ws = tmp_path / "ws"
    proc = start("from omnifer.cli.main import main; main()",
                 "-q", "-w", ws, "synth", tmp_path / "data", "--preset", "demo")
    wait_for(lambda: list(ws.glob(".omnifer/runs/synth/*/manifest.json")))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "terminated; run the same command again to resume"
    (run,) = Workspace(ws).runs("synth")
    assert run.status == "failed" and run.manifest["error"] == "terminated"


# ---------------------------------------------------------------- 8: two commands at once

def test_two_processes_never_share_a_run(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.start_run("train", config={"epochs": 8}).fail("killed")  # both would resume it
    (killed,) = ws.runs("train")
    first = start(OPEN_AND_SLEEP, ws.root, 30)
    assert first.stdout.readline().strip() == killed.run_id
    second = start(OPEN_AND_SLEEP, ws.root, 0)
    out, err = second.communicate(timeout=60)
    first.kill()
    first.wait()
    assert out.strip() != killed.run_id, "the second process opened the first one's run"
    assert f"not resuming: train/{killed.run_id} is open in another process (pid " \
           f"{first.pid}); starting a new run train/{out.strip()}" in err


# ---------------------------------------------------------------- 9: unfinished runs by path

def test_unfinished_runs_are_refused_in_every_form(tmp_path, run_cli):
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(KeyboardInterrupt):
        with ws.start_run("train", config={"epochs": 8}) as killed:
            member = killed.path / "members" / "0"
            member.mkdir(parents=True)
            (member / "model.json").write_text("{}")  # an intermediate checkpoint
            raise KeyboardInterrupt
    fix = re.escape("is failed; finish it (run its command again to resume)")
    for ref in (killed.ref, killed.path, member):
        with pytest.raises(OmniferError, match=fix):
            resolve.train_run(ws, str(ref))
        with pytest.raises(OmniferError, match=fix):
            resolve.model_dir(ws, str(ref))
    running = ws.start_run("mine", config={}, resume=False)
    for ref in (running.ref, running.path):
        with pytest.raises(OmniferError, match="is running; wait for it to finish"):
            resolve.data_path(ws, str(ref))
    code, _, err = run_cli("-w", ws.root, "evaluate", killed.path)
    assert code == 1 and f"run {killed.ref} is failed" in err and len(err.splitlines()) == 1
    running.fail("killed")


# ---------------------------------------------------------------- 12: permissions

@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = atomic_write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_read_only_workspace_is_one_line(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    os.chmod(ws, 0o555)
    try:
        proc = start("from omnifer.cli.main import main; main()", "-q", "-w", ws, "synth",
                     tmp_path / "data", "--preset", "tiny", preexec_fn=without_root_override)
        _, err = proc.communicate(timeout=60)
    finally:
        os.chmod(ws, 0o755)
    assert proc.returncode == 1
    assert err.splitlines() == [
        f"error: cannot write to {ws}: permission denied; make it writable (chmod u+w) or "
        "use another workspace (-w DIR) (set OMNIFER_DEBUG=1 for the traceback)"]


# ---------------------------------------------------------------- 17: JSON, labels, hints, refs

def test_json_files_hold_null_for_nan(tmp_path):
    from omnifer.artifacts import json_text

    path = atomic_write_json(tmp_path / "m.json", {"ece": float("nan"), "f1": [np.float32("inf")]})
    assert strict_json(path.read_text()) == {"ece": None, "f1": [None]}
    assert strict_json(json_text({"x": float("-inf")})) == {"x": None}


def test_majority_class_rate_is_labelled_majority():
    from omnifer.train.evaluate import task_metrics

    y = np.array([0, 0, 0, 1])
    arrays = {"expression": y, "expression_mask": np.ones(4, bool), "va_mask": np.zeros(4, bool),
              "au_mask": np.zeros((4, 0), bool)}
    probs = np.eye(2)[[1, 1, 0, 0]].astype(np.float32)
    e = task_metrics({"expression_probs": probs, "expression_probs_raw": probs}, arrays,
                     expressions=["neutral", "happy"], aus=[])["expression"]
    assert "chance" not in e
    assert e["majority"] == {"accuracy": 0.75, "macro_f1": pytest.approx((6 / 7) / 2)}


def test_latest_works_in_stage_refs(tmp_path):
    ws = Workspace(tmp_path / "ws")
    for _ in range(2):
        with ws.start_run("mine", config={}, resume=False) as run:
            pass
    assert ws.resolve("mine/latest", "mine").run_id == run.run_id
    with pytest.raises(OmniferError, match="no complete distill run.*omnifer distill"):
        ws.resolve("distill/latest", "distill")


@pytest.mark.parametrize("command", [
    ["mine", "--exclude"], ["mine", "--labeled"], ["mine", "--model"], ["mine", "--index"],
    ["distill", "--from"], ["distill", "--with-labeled", "--labeled"],
    ["train", "--student", "--teacher"], ["train", "--with"], ["evaluate", "--data"]])
def test_missing_paths_name_the_option(tmp_path, run_cli, command):
    missing = tmp_path / "nowhere" / "x.toml"
    code, out, err = run_cli("-w", tmp_path / "ws", *command, missing)
    assert code == 1 and err.splitlines() == [
        f"error: {command[-1]} {missing}: no such file or folder; pass an existing path or a "
        "run (STAGE/ID, STAGE/latest) (set OMNIFER_DEBUG=1 for the traceback)"]


def test_resumed_run_records_the_seconds_of_every_invocation(tmp_path):
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(KeyboardInterrupt):
        with ws.start_run("train", config={}):
            time.sleep(0.3)
            raise KeyboardInterrupt
    with ws.start_run("train", config={}) as run:
        time.sleep(0.1)
    timings = Run(run.path).manifest["timings"]
    assert len(timings["invocations"]) == 2 and timings["invocations"][0] >= 0.3
    assert timings["seconds"] == pytest.approx(sum(timings["invocations"]), abs=1e-3)
    assert timings["seconds"] >= 0.4


# ---------------------------------------------------------------- end to end (slow)

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """synth -> train -> index in one workspace, through the Python API."""
    pytest.importorskip("torch")
    pytest.importorskip("faiss")
    from omnifer import pipeline
    from omnifer.pools.config import IndexConfig
    from omnifer.train import TrainConfig

    root = tmp_path_factory.mktemp("reliability") / "ws"
    s = pipeline.synth(root, pipeline.SynthOptions(preset="tiny", size=48), out=root / "data")
    t = pipeline.train(root, TrainConfig(backbone="convnet", input_size=32, epochs=1,
                                         device="cpu"))
    i = pipeline.index(root, IndexConfig(workers=0, device="cpu"), pool=s.pool)
    return {"root": root, "synth": s, "train": t, "index": i}


@pytest.mark.slow
def test_train_resume_notices_a_file_edited_behind_its_spec(trained, tmp_path, caplog):
    from omnifer import pipeline
    from omnifer.train import TrainConfig

    data = tmp_path / "data"
    shutil.copytree(trained["root"] / "data", data)
    config = TrainConfig(backbone="convnet", input_size=32, epochs=3, device="cpu")

    def kill(entry):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipeline.train(trained["root"], config, data=data / "labeled.toml", on_epoch=kill)
    (killed,) = [r for r in Workspace(trained["root"]).runs("train") if r.status == "failed"]
    labels = data / "labeled" / "va" / "labels.csv"  # the spec points to it; the spec is as it was
    text = labels.read_text().splitlines()
    labels.write_text("\n".join([text[0], text[1].replace("-0.", "0."), *text[2:]]) + "\n")
    with caplog.at_level(logging.WARNING):
        rec = pipeline.train(trained["root"], config, data=data / "labeled.toml")
    assert rec.run_id != killed.run_id and rec.status == "complete"
    assert f"the inputs of {killed.ref} changed since (rows)" in caplog.text


@pytest.mark.slow
def test_evaluate_on_an_empty_manifest_is_one_line(trained, tmp_path, run_cli):
    empty = tmp_path / "empty.csv"
    empty.write_text("image,expression\n")
    code, _, err = run_cli("-w", trained["root"], "evaluate", "--data", empty)
    assert code == 1 and len(err.strip().splitlines()) == 1 and str(empty) in err, err


@pytest.mark.slow
def test_copied_workspace_is_independent(trained, tmp_path, run_cli):
    from omnifer import pipeline
    from omnifer.mining import MineConfig
    from omnifer.train.config import EvaluateConfig

    root = trained["root"]
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    for path in copy.rglob("*"):  # every file of the copy is garbage now
        if path.is_file() and path.name != "manifest.json":
            path.write_bytes(b"garbage")
    mine = MineConfig(threshold=-1, k=3, score="max", leak_threshold=1.0, device="cpu",
                      calibrate=False, ood_quantile=0)
    rec = pipeline.mine(root, mine)  # the original does not read the copy
    assert rec.counts["mined"] > 0 and rec.dataset.is_relative_to(root)
    assert pipeline.evaluate(root, EvaluateConfig(device="cpu")).counts["samples"] > 0
    index = resolve.run(Workspace(copy), None, "index")
    assert index.embeddings.is_relative_to(copy) and index.model.is_relative_to(copy)
    with pytest.raises(Exception):  # and the copy reads its own (garbage) files
        pipeline.mine(copy, mine)
