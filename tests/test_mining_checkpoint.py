"""A resumable pool pass: finished spans are saved, an interrupted pass goes on from them."""

import numpy as np
import pytest

from omnifer.mining import engine
from omnifer.mining.engine import SPAN_BLOCKS, evidence

BLOCK = 8
SPAN = BLOCK * SPAN_BLOCKS


def data(n=1000, m=60, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((4, d))
    labels = rng.integers(0, 4, m)
    labeled = centres[labels] + 0.3 * rng.standard_normal((m, d))
    pool = centres[rng.integers(0, 4, n)] + 0.5 * rng.standard_normal((n, d))
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return unit(pool), unit(labeled), labels


def same(a, b):
    for f in ("rows", "scores", "votes", "neighbours", "neighbour_scores"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


@pytest.mark.parametrize("candidates", [False, True])
def test_a_pass_with_a_checkpoint_equals_one_without(tmp_path, candidates):
    pool, labeled, labels = data()
    rows = np.sort(np.random.default_rng(1).choice(len(pool), 700, replace=False)) \
        if candidates else None
    kw = dict(k=5, score="mean", floor=0.9, block=BLOCK, device="cpu", rows=rows)
    want = evidence(pool, labeled, labels, 4, **kw)
    got = evidence(pool, labeled, labels, 4, checkpoint=tmp_path / "ev", **kw)
    same(got, want)
    assert 0 < len(want) < len(pool)
    total = len(pool) if rows is None else len(rows)
    assert len(list((tmp_path / "ev").glob("span-*.npz"))) == -(-total // SPAN)
    again = evidence(pool, labeled, labels, 4, checkpoint=tmp_path / "ev", **kw)
    same(again, want)


def test_an_interrupted_pass_scores_only_the_spans_left(tmp_path, monkeypatch):
    pool, labeled, labels = data()
    kw = dict(k=5, score="max", floor=0.5, block=BLOCK, device="cpu")
    want = evidence(pool, labeled, labels, 4, **kw)

    def stop(done, total):
        if done > 2 * SPAN:  # in the third span: two are saved
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evidence(pool, labeled, labels, 4, checkpoint=tmp_path, progress=stop, **kw)
    assert len(list(tmp_path.glob("span-*.npz"))) == 2

    scored = []
    real = engine.make_scorer

    def counting(columns, device):
        scorer = real(columns, device)
        rowmax = scorer.rowmax
        scorer.rowmax = lambda x, cols: scored.append(len(x)) or rowmax(x, cols)
        return scorer

    monkeypatch.setattr(engine, "make_scorer", counting)
    calls = []
    got = evidence(pool, labeled, labels, 4, checkpoint=tmp_path,
                   progress=lambda done, total: calls.append(done), **kw)
    same(got, want)
    assert sum(scored) == len(pool) - 2 * SPAN  # the two saved spans are not scored again
    assert calls[0] == SPAN and calls[-1] == len(pool)


def test_spans_of_other_arguments_are_not_mixed_in(tmp_path):
    pool, labeled, labels = data()
    kw = dict(score="mean", floor=0.5, block=BLOCK, device="cpu", checkpoint=tmp_path)
    evidence(pool, labeled, labels, 4, k=5, **kw)
    got = evidence(pool, labeled, labels, 4, k=3, **kw)
    same(got, evidence(pool, labeled, labels, 4, k=3, score="mean", floor=0.5, block=BLOCK,
                       device="cpu"))
    other = evidence(pool, labeled[::-1].copy(), labels[::-1].copy(), 4, k=3, **kw)
    assert not np.array_equal(other.neighbours, got.neighbours)  # new labeled rows: rescored


def test_an_interrupted_mine_run_is_reopened_and_finishes(tmp_path):
    from contextlib import contextmanager

    from conftest import build_workspace
    from omnifer import pipeline

    pytest.importorskip("torch")
    pytest.importorskip("faiss")
    ws = build_workspace(tmp_path)
    config = ws["mine_config"].replace(k=2)

    @contextmanager
    def interrupting(desc, unit="it"):
        def update(done, total):
            if desc == "mining":
                raise KeyboardInterrupt

        yield update

    with pytest.raises(KeyboardInterrupt):
        pipeline.mine(tmp_path, config, progress=interrupting)
    failed = [r for r in (tmp_path / ".omnifer/runs/mine").iterdir()
              if r.name != ws["mine"].run_id]
    assert len(failed) == 1
    rec = pipeline.mine(tmp_path, config)
    assert rec.run_id == failed[0].name and rec.status == "complete"
    assert rec.run.manifest.get("resumed") == 1
    assert not (rec.path / "evidence").exists()


KILLED_PASS = """
import sys
import numpy as np
from omnifer.mining.engine import evidence

folder, out = sys.argv[1], sys.argv[2]
pool = np.load(folder + "/pool.npy", mmap_mode="r")
labeled, labels = np.load(folder + "/labeled.npy"), np.load(folder + "/labels.npy")
ev = evidence(pool, labeled, labels, 4, k=5, score="max", floor=0.9, block=64, device="cpu",
              checkpoint=folder + "/ev")
np.savez(out, rows=ev.rows, scores=ev.scores, neighbours=ev.neighbours)
"""


@pytest.mark.slow
def test_a_pass_killed_with_sigkill_goes_on_to_the_same_result(tmp_path):
    """A real kill -9 in the middle of a pass over a memory-mapped pool, then the same pass."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pool, labeled, labels = data(n=60_000, m=2_000, d=64)
    np.save(tmp_path / "pool.npy", pool.astype(np.float16))
    np.save(tmp_path / "labeled.npy", labeled)
    np.save(tmp_path / "labels.npy", labels)
    script = tmp_path / "pass.py"
    script.write_text(KILLED_PASS)
    cmd = [sys.executable, str(script), str(tmp_path), str(tmp_path / "out.npz")]
    proc = subprocess.Popen(cmd)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None \
            and len(list((tmp_path / "ev").glob("span-*.npz"))) < 3:
        time.sleep(0.02)
    assert proc.poll() is None, "the pass finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = len(list((tmp_path / "ev").glob("span-*.npz")))
    spans = -(-len(pool) // (64 * SPAN_BLOCKS))
    assert 3 <= saved < spans
    subprocess.run(cmd, check=True, timeout=300)
    got = np.load(tmp_path / "out.npz")
    want = evidence(np.load(tmp_path / "pool.npy", mmap_mode="r"), labeled, labels, 4, k=5,
                    score="max", floor=0.9, block=64, device="cpu")
    assert len(want) > 0
    for f in ("rows", "scores", "neighbours"):
        np.testing.assert_array_equal(got[f], getattr(want, f))
