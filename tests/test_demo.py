"""``omnifer demo``: the whole chain on the tiny benchmark, resumable step by step."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from omnifer import host
from omnifer.errors import OmniferError
from omnifer.pipeline.demo import DemoConfig, steps

pytest.importorskip("torch")
pytest.importorskip("faiss")

FAST = ["--preset", "tiny", "--fast", "--device", "cpu"]


def run_dirs(ws):
    return sorted(p.relative_to(ws / ".omnifer/runs").as_posix()
                  for p in (ws / ".omnifer/runs").glob("*/*"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One tiny demo through the Python API, with the step events it sent."""
    from omnifer import pipeline

    ws = tmp_path_factory.mktemp("demo")
    events = []
    warnings = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("omnifer.pipeline.demo").addHandler(handler)
    try:
        rec = pipeline.demo(ws, DemoConfig(preset="tiny", fast=True, device="cpu"),
                            on_step=events.append)
    finally:
        logging.getLogger("omnifer.pipeline.demo").removeHandler(handler)
    return ws, rec, events, warnings


def test_demo_runs_every_step_and_reports(finished):
    ws, rec, events, _ = finished
    names = [s.name for s in steps(DemoConfig())]
    assert rec.status == "complete" and [s["step"] for s in rec.steps] == names
    assert [e["step"] for e in events if e["status"] == "done"] == names
    assert all(e["remaining"] >= 0 and e["elapsed"] >= 0 for e in events)
    assert events[-1]["remaining"] == 0
    # the teacher and four students, each with its train and evaluate run, in the report
    assert [a["role"] for a in rec.arms] == ["teacher", "labeled", "mined", "distilled", "both"]
    for arm in rec.arms:
        assert (ws / ".omnifer/runs" / arm["evaluate"] / "manifest.json").is_file()
    students = [json.loads((ws / ".omnifer/runs" / a["train"] / "manifest.json").read_text())
                for a in rec.arms[1:]]
    assert all(m["config"]["teacher"] for m in students)
    assert [len(m["config"]["data"]) for m in students] == [1, 2, 2, 3]
    # --fast: the primitive model trains longer than the students, long enough to mine faces
    teacher = json.loads((ws / ".omnifer/runs" / rec.arms[0]["train"] / "manifest.json")
                         .read_text())
    assert teacher["config"]["train"]["epochs"] == DemoConfig.fast_teacher_epochs > 3
    assert {m["config"]["train"]["epochs"] for m in students} == {DemoConfig.fast_student_epochs}
    assert (ws / "report.html").is_file() and (ws / "report.md").is_file()
    # the machine the results came from heads the report
    assert f"- machine: {host.describe()}" in (ws / "report.md").read_text().splitlines()
    assert (ws / "hub").is_dir() and list((ws / "hub").glob("*/README.md"))


def test_demo_says_plainly_when_nothing_was_mined(finished):
    ws, rec, _, warnings = finished
    mine = next(s["run"] for s in rec.steps if s["step"] == "mine")
    manifest = json.loads((ws / ".omnifer/runs" / mine / "manifest.json").read_text())
    assert manifest["counts"]["mined"] == 0  # the tiny preset's model mines nothing
    assert any(w.startswith("the mined set is empty (more --teacher-epochs") and
               w.endswith("distilling the labeled faces") for w in warnings)
    assert not any("has no face of" in w for w in warnings)


def test_demo_again_redoes_nothing(finished):
    from omnifer import pipeline

    ws, rec, _, _ = finished
    before = run_dirs(ws)
    again = pipeline.demo(ws, DemoConfig(preset="tiny", fast=True, device="cpu"))
    assert again.run_id == rec.run_id and run_dirs(ws) == before


def test_demo_cli_prints_results_and_report(finished, run_cli):
    ws, rec, _, _ = finished
    code, out, err = run_cli("demo", ws, *FAST)
    assert code == 0, err
    assert out.rstrip().splitlines()[-1] == f"report: {ws / 'report.html'}"
    assert "student: + mined" in out and rec.ref in out


@pytest.mark.parametrize("flags, message", [
    (["--teacher-epochs", "0"], "teacher_epochs must be at least 1"),
    (["--images-per-class", "0"], "images_per_class must be at least 1"),
    (["--teacher-epochs", "5"], "give teacher/student epochs without fast"),
])
def test_demo_bad_values_are_one_line_and_write_nothing(tmp_path, run_cli, flags, message):
    code, out, err = run_cli("demo", tmp_path / "ws", *FAST, *flags)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ws").exists()


def test_demo_config_share_range():
    with pytest.raises(OmniferError, match="distilled_share"):
        DemoConfig(distilled_share=1.0)


def test_demo_killed_during_training_resumes_without_redoing(tmp_path):
    """A real interruption: SIGKILL while the primitive model trains, then the same command."""
    ws = tmp_path / "ws"
    cmd = [sys.executable, "-m", "omnifer.cli.main", "-q", "demo", str(ws), "--preset", "tiny",
           "--device", "cpu", "--teacher-epochs", "80", "--student-epochs", "1"]
    env = {**os.environ, "OMNIFER_DEBUG": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    history = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        found = list((ws / ".omnifer/runs/train").glob("*/members/0/history.json"))
        if found and len(json.loads(found[0].read_text() or "[]")) >= 2:
            history = found[0]
            break
        time.sleep(0.05)
    assert history is not None and proc.poll() is None, proc.communicate()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = json.loads(history.read_text())
    epochs_done = len(before)
    synth_runs = run_dirs(ws)
    assert [r for r in synth_runs if r.startswith("synth/")] and epochs_done < 80

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    runs = run_dirs(ws)
    # one synth, one teacher (resumed, not restarted), one demo run (resumed)
    assert len([r for r in runs if r.startswith("synth/")]) == 1
    assert len([r for r in runs if r.startswith("demo/")]) == 1
    teacher = json.loads((history.parents[2] / "manifest.json").read_text())
    assert teacher["status"] == "complete" and teacher.get("resumed") == 1
    after = json.loads(history.read_text())
    assert after[:epochs_done] == before  # the epochs trained before the kill are kept
    assert [e["epoch"] for e in after] == list(range(1, len(after) + 1))


def test_interrupted_demo_reruns_a_deleted_step_and_everything_after_it(tmp_path):
    import shutil

    from omnifer import pipeline

    config = DemoConfig(preset="tiny", fast=True, device="cpu")

    def stop_at_distill(event):
        if event["step"] == "distill" and event["status"] == "start":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipeline.demo(tmp_path, config, on_step=stop_at_distill)
    first = json.loads(next((tmp_path / ".omnifer/runs/demo").glob("*/manifest.json")).read_text())
    first_steps = {s["step"]: s["run"] for s in first["steps"]}
    assert first["status"] == "failed" and [s["step"] for s in first["steps"]] == [
        "synth", "teacher", "evaluate teacher", "index", "mine"]
    shutil.rmtree(tmp_path / ".omnifer/runs" / first_steps["index"])
    events = []
    rec = pipeline.demo(tmp_path, config, on_step=events.append)
    status = {e["step"]: e["status"] for e in events if e["status"] != "start"}
    assert [status[s] for s in ("synth", "teacher", "evaluate teacher")] == ["skipped"] * 3
    assert status["index"] == status["mine"] == status["distill"] == "done"
    assert rec.run_id == first["run_id"] and rec.status == "complete"
    runs = {s["step"]: s["run"] for s in rec.steps}
    assert [s["step"] for s in rec.steps] == [s.name for s in steps(config)]
    for name in ("synth", "teacher"):
        assert runs[name] == first_steps[name]
    assert runs["mine"] != first_steps["mine"]
