"""Progress on stderr: tqdm bars on a terminal, plain lines in a log file."""

import io
import sys

from omnifer.pipeline import progress
from omnifer.pipeline.progress import clock, line_progress, tqdm_progress


def test_line_progress_prints_done_total_and_time_left():
    out = io.StringIO()
    with line_progress("embedding", "img", every=0.0, file=out) as update:
        update(250, 1000)
        update(1000, 1000)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # two updates and the end
    assert lines[0].startswith("embedding: 250/1,000 img (25%) in ")
    assert "left" in lines[0]
    assert lines[-1].startswith("embedding: 1,000/1,000 img (100%) in ")
    assert "left" not in lines[-1] and "\r" not in out.getvalue()


def test_short_work_prints_nothing():
    out = io.StringIO()
    with line_progress("reading", "img", every=3600.0, file=out) as update:
        for i in range(100):
            update(i + 1, 100)
    assert out.getvalue() == ""


def test_the_cli_bar_is_lines_in_a_log_and_a_bar_in_a_notebook(capsys, monkeypatch):
    monkeypatch.setattr(progress, "LINE_EVERY", 0.0)
    with tqdm_progress("mining", "face") as update:  # pytest's stderr is no terminal
        update(5, 10)
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith("mining: 5/10 face (50%)") and "\r" not in err

    with tqdm_progress("mining", "face", disable=True) as update:  # --quiet
        update(5, 10)
    assert capsys.readouterr().err == ""

    monkeypatch.setitem(sys.modules, "ipykernel", object())  # a notebook: its stderr is no tty
    with tqdm_progress("mining", "face") as update:
        update(5, 10)
    assert "mining:  50%|" in capsys.readouterr().err  # tqdm's bar, not a line


def test_clock():
    assert [clock(s) for s in (3.2, 123, 3723)] == ["3 s", "2 min 03 s", "62 min 03 s"]
