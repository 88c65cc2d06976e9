import json
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from omnifer.artifacts import (
    ShardedWriter,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    content_id,
    fingerprint,
    path_fingerprint,
    shard_name,
)
from omnifer.errors import ConfigMismatchError, OmniferError


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half written")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no temp file left


def test_atomic_write_json_roundtrip_and_types(tmp_path):
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Cfg:
        a: int
        b: tuple

    atomic_write_json(tmp_path / "c.json", {"cfg": Cfg(1, (2, 3)), "p": tmp_path})
    data = json.loads((tmp_path / "c.json").read_text())
    assert data == {"cfg": {"a": 1, "b": [2, 3]}, "p": str(tmp_path)}


def test_content_id_is_stable_and_content_based():
    assert content_id(b"abc") == content_id(b"abc")
    assert content_id(b"abc") != content_id(b"abd")
    assert len(content_id(b"")) == 32
    # a fixed reference value: ids must never change between versions
    assert content_id(b"omnifer") == __import__("hashlib").blake2b(b"omnifer", digest_size=16).hexdigest()


def test_fingerprint_ignores_key_order_but_not_values():
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_path_fingerprint_changes_when_folder_changes(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"1")
    before = path_fingerprint(tmp_path)
    assert path_fingerprint(tmp_path) == before
    (tmp_path / "y.jpg").write_bytes(b"2")
    assert path_fingerprint(tmp_path) != before
    with pytest.raises(OmniferError, match="does not exist"):
        path_fingerprint(tmp_path / "missing")


def test_shard_names():
    assert shard_name(3) == "shard-00003.parquet"
    assert shard_name(3, 10, prefix="train", suffix=".parquet") == "train-00003-of-00010.parquet"


def _write_all(directory, fp, n=5, fail_at=None, calls=None):
    w = ShardedWriter(directory, config_fingerprint=fp)
    for i in range(n):
        if w.done(i):
            continue
        if i == fail_at:
            raise KeyboardInterrupt
        if calls is not None:
            calls.append(i)
        w.write_table(i, pd.DataFrame({"i": [i] * (i + 1)}))
    return w


def test_sharded_writer_resumes_after_interruption(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _write_all(tmp_path / "run", "fp1", fail_at=3)
    calls = []
    w = _write_all(tmp_path / "run", "fp1", calls=calls)
    assert calls == [3, 4]  # only the missing shards were written
    assert w.completed == [0, 1, 2, 3, 4]
    ref = _write_all(tmp_path / "ref", "fp1")
    for a, b in zip(w.shard_paths(), ref.shard_paths()):
        pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b))


def test_sharded_writer_refuses_other_config(tmp_path):
    _write_all(tmp_path / "run", "fp1", n=2)
    with pytest.raises(ConfigMismatchError, match="fp1"):
        ShardedWriter(tmp_path / "run", config_fingerprint="fp2")


def test_sharded_writer_survives_a_real_kill(tmp_path):
    """A process killed between writing a shard and recording it leaves no shard counted
    half-done; the resumed run completes the set."""
    script = textwrap.dedent(f"""
        import os, signal
        from omnifer.artifacts import ShardedWriter, atomic_write_bytes
        w = ShardedWriter({str(tmp_path / 'run')!r}, config_fingerprint="fp")
        for i in range(4):
            if w.done(i):
                continue
            if i == 2 and not os.environ.get("RESUME"):
                atomic_write_bytes(w.path(i), b"partial")  # written, never recorded
                os.kill(os.getpid(), signal.SIGKILL)
            w.write_bytes(i, b"shard%d" % i)
    """)
    first = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert first.returncode != 0
    w = ShardedWriter(tmp_path / "run", config_fingerprint="fp")
    assert w.completed == [0, 1]
    second = subprocess.run([sys.executable, "-c", script], env={**os.environ, "RESUME": "1"},
                            capture_output=True)
    assert second.returncode == 0, second.stderr
    w = ShardedWriter(tmp_path / "run", config_fingerprint="fp")
    assert w.completed == [0, 1, 2, 3]
    assert [p.read_bytes() for p in w.shard_paths()] == [b"shard%d" % i for i in range(4)]
