"""``omnifer report``: a self-contained HTML page (embedded PNGs, no external resource), the
results table from the evaluate records, the share of the mined gain, missing runs and
sections, the embedding map's groups against the pool's hidden truth, and the command."""

import base64
import io
import re
import shutil

import numpy as np
import pytest

from conftest import build_workspace

from omnifer import pipeline
from omnifer.errors import OmniferError
from omnifer.pipeline.report import report
from omnifer.records import ReportRun
from omnifer.report import ReportConfig, pca_2d, results_table, share_of_mined_gain
from omnifer.workspace import Workspace

pytest.importorskip("torch")
pytest.importorskip("faiss")

SMALL = dict(backbone="convnet", input_size=32, epochs=1, device="cpu")


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """synth -> train -> index -> mine, a distill run, a student on mined + distilled data,
    and an evaluate run of the teacher and of the student."""
    from omnifer.distill import DistillConfig
    from omnifer.train import TrainConfig

    w = build_workspace(tmp_path_factory.mktemp("report") / "ws")
    root = w["root"]
    w["distill"] = pipeline.distill(root, DistillConfig(images_per_class=2, with_labeled=True,
                                                        device="cpu"))
    student = pipeline.train(root, TrainConfig(**SMALL), student=True,
                             extra=[w["mine"].ref, w["distill"].ref])
    w["student"] = student
    w["evaluations"] = [pipeline.evaluate(root, model=w["train"].ref),
                        pipeline.evaluate(root, model=student.ref)]
    return w


@pytest.fixture(scope="module")
def made(ws):
    """The report of the full workspace, with the progress it reported."""
    from contextlib import contextmanager

    calls = []

    @contextmanager
    def progress(desc, unit):
        calls.append((desc, unit))
        yield lambda done, total: calls.append((done, total))

    rec = report(ws["root"], ReportConfig(device="cpu", faces_per_class=3), progress=progress)
    return rec, calls


def images(html):
    return re.findall(r"<img [^>]*src=\"([^\"]*)\"", html)


def table_row(markdown, name):
    line = next(x for x in markdown.splitlines() if x.startswith(f"| {name} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_report_is_one_self_contained_page(ws, made):
    from PIL import Image

    rec, calls = made
    assert isinstance(rec, ReportRun) and rec.status == "complete"
    html = rec.html.read_text(encoding="utf-8")
    assert (ws["root"] / "report.html").read_text(encoding="utf-8") == html
    assert (ws["root"] / "report.md").read_text(encoding="utf-8") \
        == rec.markdown.read_text(encoding="utf-8")
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", html, re.I)
    assert "<script" not in html.lower() and "@import" not in html and "url(" not in html
    srcs = images(html)
    # contact sheet, mined faces, 3 mining plots, distilled grid, 2 x 2 model plots, map
    assert len(srcs) == 11, html.count("not available")
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            assert im.format == "PNG" and min(im.size) > 0
    assert "not available" not in html.split("<h2>Lineage")[1]  # only the demo steps lack
    assert ("report", "section") in calls and calls[-1] == (8, 8)
    # the lineage lists every run made before the report
    for run in Workspace(ws["root"]).runs():
        if run.stage != "report":
            assert run.ref in html


def test_results_table_holds_the_evaluate_metrics(ws, made):
    rec = made[0]
    markdown = rec.markdown.read_text(encoding="utf-8")
    html = rec.html.read_text(encoding="utf-8")
    names = ["teacher", "student + mine + distill"]
    assert [r["name"] for r in rec.results] == names
    assert [r["role"] for r in rec.results] == ["teacher", "both"]
    for name, ev, row in zip(names, ws["evaluations"], rec.results):
        e = ev.results["expression"]
        expected = [e["macro_f1"], e["accuracy"], ev.results["va"]["ccc_mean"],
                    ev.results["au"]["f1_mean"], e["ece_after"]]
        assert [row[k] for k in ("macro_f1", "accuracy", "ccc_mean", "au_f1", "ece_after")] \
            == pytest.approx(expected)
        assert table_row(markdown, name)[1:6] == [f"{v:.3f}" for v in expected]
        assert row["evaluate"] == ev.ref and ev.ref in html
    assert rec.results[0]["train_seconds"] == pytest.approx(ws["train"].train_seconds)
    assert "after temperature scaling" in markdown
    majority = ws["evaluations"][0].results["expression"]["majority"]["accuracy"]
    assert f"always the majority class: accuracy {majority:.3f}" in html
    assert f"HTML report: {ws['root'] / 'report.html'}" in markdown


def test_share_of_the_mined_gain():
    rows = [{"name": "t", "role": "teacher", "macro_f1": 0.9},
            {"name": "l", "role": "labeled", "macro_f1": 0.5},
            {"name": "m", "role": "mined", "macro_f1": 0.7},
            {"name": "d", "role": "distilled", "macro_f1": 0.6},
            {"name": "b", "role": "both", "macro_f1": 0.8},
            {"name": "x", "role": "both", "macro_f1": None}]
    assert share_of_mined_gain(rows) == pytest.approx([None, None, 1.0, 0.5, 1.5, None])
    for row, share in zip(rows, share_of_mined_gain(rows)):
        row["share_of_mined_gain"] = share
    assert [c[-1] for c in results_table(rows)] == ["", "", "1.00", "0.50", "1.50", ""]
    assert results_table(rows)[0][1] == "0.900"
    assert share_of_mined_gain([r for r in rows if r["role"] != "mined"]) == [None] * 5
    equal = [{"role": "labeled", "macro_f1": 0.5}, {"role": "mined", "macro_f1": 0.5},
             {"role": "both", "macro_f1": 0.6}]
    assert share_of_mined_gain(equal) == [None] * 3


def test_embedding_map_groups_follow_the_hidden_truth(ws, made):
    import pandas as pd

    counts = made[0].counts
    truth = pd.read_parquet(ws["synth"].pool_truth)
    bad = set(truth.loc[truth["kind"].isin(["nonface", "occluded"]), "file"])
    mined = set(pd.read_parquet(ws["mine"].dataset)["key"])
    assert counts["map_distractors"] == len(bad)
    assert counts["map_mined"] == len(mined - bad)
    assert counts["map_rejected"] == len(truth) - len(bad) - len(mined - bad)
    assert counts["map_labeled"] > 0
    assert (made[0].path / "embedding_map.png").is_file()


def test_pca_finds_the_main_axis():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 4)) * [0.1, 5.0, 0.1, 1.0] + 3.0
    mean, axes, share = pca_2d(x)
    assert mean == pytest.approx(x.mean(0))
    assert abs(axes[0, 1]) == pytest.approx(1.0, abs=0.01)
    assert abs(axes[1, 3]) == pytest.approx(1.0, abs=0.05)
    assert share[0] > 0.9 and share.sum() <= 1.0


def test_demo_arms_and_a_missing_run(ws, tmp_path):
    """Arms come from the latest demo run (any status); one that names a run that no longer
    exists is skipped with a note, and the share of the mined gain is computed."""
    root = tmp_path / "copy"
    shutil.copytree(ws["root"], root)
    teacher, student = ws["evaluations"]
    arms = [{"name": "labeled only", "role": "labeled", "train": ws["train"].ref,
             "evaluate": teacher.ref},
            {"name": "gone", "role": "distilled", "train": "train/20000101-000000-dead",
             "evaluate": "evaluate/20000101-000000-dead"},
            {"name": "with mined", "role": "mined", "train": "train/20000101-000000-beef",
             "evaluate": student.ref}]
    copied = Workspace(root)
    (copied.resolve(ws["mine"].ref, "mine").output("histograms")).unlink()
    demo = copied.start_run("demo", config={}, resume=False)
    demo.update(arms=arms, steps=[{"step": "synth", "run": ws["synth"].ref, "seconds": 1.5},
                                  {"step": "mine", "run": ws["mine"].ref, "seconds": 2.5}])
    demo.release()
    rec = report(root, ReportConfig(device="cpu", map_points=5), out=tmp_path / "out" / "r.html")
    html = (tmp_path / "out" / "r.html").read_text(encoding="utf-8")
    assert (tmp_path / "out" / "r.md").is_file()
    assert [r["name"] for r in rec.results] == ["labeled only", "with mined"]
    assert rec.results[1]["train_seconds"] is None
    assert "gone" in html and "skipped" in html and "evaluate/20000101-000000-dead" in html
    f1 = [r["macro_f1"] for r in rec.results]
    assert rec.results[1]["share_of_mined_gain"] == (None if f1[0] == f1[1] else 1.0)
    assert demo.ref in html
    markdown = rec.markdown.read_text(encoding="utf-8")
    assert table_row(markdown, "synth")[1:] == [ws["synth"].ref, "1.5"]
    assert table_row(markdown, "mine")[1:] == [ws["mine"].ref, "2.5"]
    assert "not available: score histograms" in html
    assert rec.counts["map_labeled"] > 5 and len(images(html)) == 10
    # the demo run writing this report (open in this process) has done its other steps
    assert f"demo run: {demo.ref} (complete up to this report, its last step)" in markdown
    demo.update(pid=2 ** 22 + 1)  # another process's run, which is gone
    rec = report(root, ReportConfig(device="cpu", map_points=5), out=tmp_path / "out" / "r.html")
    assert f"demo run: {demo.ref} (stale)" in rec.markdown.read_text(encoding="utf-8")


def test_a_workspace_with_only_synth_train_evaluate(tmp_path):
    from omnifer.train import TrainConfig

    root = tmp_path / "ws"
    pipeline.synth(root, pipeline.SynthOptions(preset="tiny", size=48), out=root / "data")
    trained = pipeline.train(root, TrainConfig(**SMALL))
    ev = pipeline.evaluate(root, model=trained.ref)
    rec = report(root, ReportConfig(device="cpu"))
    html = rec.html.read_text(encoding="utf-8")
    assert [r["evaluate"] for r in rec.results] == [ev.ref]
    for section in ("Mining", "Distillation", "Embedding map"):
        body = html.split(f"<h2>{section}</h2>")[1].split("</section>")[0]
        assert "not available: " in body and "no complete" in body, section
    assert len(images(html)) == 3  # contact sheet, confusion, reliability
    shutil.rmtree(trained.path)  # an evaluation whose model is gone is left out
    rec = report(root, ReportConfig(device="cpu"))
    html = rec.html.read_text(encoding="utf-8")
    assert rec.results == [] and f"{ev.ref} left out" in html
    assert "not available: no complete evaluate run" in html


def test_config_is_validated():
    with pytest.raises(OmniferError, match="faces_per_class"):
        ReportConfig(faces_per_class=0)
    with pytest.raises(OmniferError, match="map_points"):
        ReportConfig(map_points=-1)
    with pytest.raises(OmniferError, match="device"):
        ReportConfig(device="tpu")
    assert ReportConfig().replace(seed=3, map_points=None).seed == 3


def test_command(ws, run_cli, tmp_path):
    code, out, err = run_cli("-q", "-w", ws["root"], "report", "--device", "cpu",
                             "--faces-per-class", "2")
    assert code == 0, err
    assert out.rstrip().splitlines()[-1] == f"report: {ws['root'] / 'report.html'}"
    assert "| teacher |" in out
    result = run_cli.json("-q", "report", ws["root"], "--out", tmp_path / "r.html",
                          "--device", "cpu", "--map-points", "10")
    assert result["html"] == str(tmp_path / "r.html") and (tmp_path / "r.md").is_file()
    assert [r["evaluate"] for r in result["results"]] == [e.ref for e in ws["evaluations"]]
    code, out, err = run_cli("report", ws["root"], "--faces-per-class", "0")
    assert code == 1 and "faces_per_class" in err
