"""Pool keys on disk (``omnifer.pools.keyfile``): read back by range, exactly as written."""

from __future__ import annotations

import pickle

from omnifer.pools.keyfile import KeyFile

KEYS = ["a.jpg", "sub/b.jpg", "", "ünï/çødé 1.png", "x" * 300, "rec.rec#17",
        "odd\udcff.jpg"]


def test_keys_come_back_by_range(tmp_path):
    keys = KeyFile.write(tmp_path / "keys", iter(KEYS))
    assert len(keys) == len(KEYS)
    assert keys.slice(0, len(KEYS)) == KEYS
    for start in range(len(KEYS) + 1):
        for stop in range(start, len(KEYS) + 2):
            assert keys.slice(start, stop) == KEYS[start:stop]
    assert keys.slice(5, 2) == [] and keys.slice(-3, 2) == KEYS[:2]


def test_rewriting_replaces_and_pickles_as_its_path(tmp_path):
    keys = KeyFile.write(tmp_path / "keys", KEYS)
    KeyFile.write(tmp_path / "keys", ["only"])
    again = pickle.loads(pickle.dumps(KeyFile(tmp_path / "keys")))
    assert len(again) == 1 and again.slice(0, 5) == ["only"]
    assert len(pickle.dumps(keys)) < 200
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["keys.bin", "offsets.npy"]


def test_no_keys_and_removal(tmp_path):
    keys = KeyFile.write(tmp_path / "keys", [])
    assert len(keys) == 0 and keys.slice(0, 10) == []
    keys.remove()
    assert not (tmp_path / "keys").exists()
    keys.remove()  # twice is fine
