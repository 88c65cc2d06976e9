"""FAISS index: choice, build, exact and approximate search, save/load, errors."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from omnifer.errors import OmniferError  # noqa: E402
from omnifer.pools import faiss_index as fi  # noqa: E402


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def random_unit(n: int, dim: int, seed: int) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, dim)))


def clustered_unit(n: int, dim: int, *, clusters: int, spread: float, seed: int) -> np.ndarray:
    """Mixture of Gaussians around random unit centres, rows L2-normalised."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((clusters, dim)))
    noise = rng.standard_normal((n, dim)) * (spread / np.sqrt(dim))
    return unit(centres[rng.integers(0, clusters, n)] + noise)


def assert_one_line(exc_info) -> None:
    text = str(exc_info.value)
    assert text and "\n" not in text


@pytest.fixture(scope="module")
def flat_case():
    db = random_unit(5000, 64, seed=0)
    queries = random_unit(200, 64, seed=1)
    return db, queries, fi.build_index(db, device="cpu")


# ---------------------------------------------------------------- choosing

def test_choose_factory_follows_size():
    assert fi.choose_factory(1, 512) == "Flat"
    assert fi.choose_factory(fi.FLAT_LIMIT, 512) == "Flat"
    big = fi.choose_factory(fi.FLAT_LIMIT + 1, 512)
    assert big == "IVF4096,SQ8"
    assert fi.choose_factory(5_800_000, 512) == "IVF8192,SQ8"
    assert fi.choose_factory(100_000_000, 512) == "IVF32768,SQ8"
    faiss.index_factory(512, big, faiss.METRIC_INNER_PRODUCT)  # a valid factory string


def test_default_search_params():
    assert fi.default_search_params("Flat", 10) == {}
    assert fi.default_search_params("IVF8192,SQ8", 5_800_000) == {"nprobe": 512}
    assert fi.default_search_params("IVF65536,SQ8", 300_000_000) == {"nprobe": 2048}
    assert fi.default_search_params("IVF256,SQ8", 40_000) == {"nprobe": 16}
    assert fi.default_search_params("IVF8,SQ8", 100) == {"nprobe": 8}
    assert fi.default_search_params("HNSW32", 10) == {"efSearch": 128}


def test_resolve_gpus_on_faiss_cpu():
    assert fi.resolve_gpus("cpu") == 0
    if faiss.get_num_gpus() == 0:
        assert fi.resolve_gpus("auto") == 0
        assert fi.resolve_gpus("cuda") == 0
    with pytest.raises(OmniferError) as exc:
        fi.resolve_gpus("tpu")
    assert_one_line(exc)


# ---------------------------------------------------------------- exact search

def test_exact_knn_matches_full_argsort():
    db = random_unit(700, 16, seed=2)
    queries = random_unit(50, 16, seed=3)
    full = queries @ db.T
    want = np.argsort(-full, axis=1)[:, :7]
    scores, ids = fi.exact_knn(queries, db, 7, block=8)  # several query and database tiles
    np.testing.assert_array_equal(ids, want)
    np.testing.assert_allclose(scores, np.take_along_axis(full, want, 1), rtol=0, atol=1e-6)


def test_flat_search_equals_exact(flat_case):
    db, queries, index = flat_case
    assert index.ntotal == 5000 and fi.choose_factory(len(db), 64) == "Flat"
    scores, ids = fi.search(index, queries, 10, block=64)
    exact_scores, exact_ids = fi.exact_knn(queries, db, 10)
    assert scores.dtype == np.float32 and ids.dtype == np.int64 and ids.shape == (200, 10)
    np.testing.assert_array_equal(ids, exact_ids)
    np.testing.assert_allclose(scores, exact_scores, rtol=0, atol=1e-5)
    assert fi.recall_at_k(ids, exact_ids, 10) == 1.0


def test_fewer_than_k_answers_are_minus_one():
    db = random_unit(3, 8, seed=4)
    index = fi.build_index(db, device="cpu")
    _, ids = fi.search(index, db[:2], 5)
    _, exact_ids = fi.exact_knn(db[:2], db, 5)
    np.testing.assert_array_equal(ids[:, 3:], -1)
    np.testing.assert_array_equal(ids, exact_ids)


# ---------------------------------------------------------------- approximate search

def test_approximate_factory_reaches_recall():
    # The structure choose_factory gives big pools (IVF{nlist},SQ8) with fewer lists, so
    # the test stays fast, searched with the default settings for that structure.
    n, dim = 40_000, 64
    factory = re.sub(r"IVF\d+", "IVF256", fi.choose_factory(5_800_000, dim))
    assert factory == "IVF256,SQ8"
    x = clustered_unit(n + 500, dim, clusters=100, spread=1.0, seed=5)
    db, queries = x[:n], x[n:]
    index = fi.build_index(db, factory=factory, device="cpu", train_size=20_000, seed=0)
    assert fi.search_parameters(index) == fi.default_search_params(factory, n) == {"nprobe": 16}
    _, ids = fi.search(index, queries, 10)
    _, exact_ids = fi.exact_knn(queries, db, 10)
    assert fi.recall_at_k(ids, exact_ids, 10) >= 0.95
    # per-call params hold for that call only
    _, few = fi.search(index, queries, 10, params={"nprobe": 1})
    assert fi.recall_at_k(few, exact_ids, 10) < fi.recall_at_k(ids, exact_ids, 10)
    assert fi.search_parameters(index) == {"nprobe": 16}



def test_public_search_parameters_and_devices():
    x = clustered_unit(2000, 16, clusters=10, spread=1.0, seed=10)
    index = fi.build_index(x, factory="IVF8,Flat", device="cpu")
    assert fi.search_parameters(index) == {"nprobe": 8}
    fi.set_search_parameters(index, nprobe=2)
    assert fi.search_parameters(index) == {"nprobe": 2}
    with pytest.raises(RuntimeError, match="inside"):
        with fi.temporary_search_parameters(index, {"nprobe": 5}):
            assert fi.search_parameters(index) == {"nprobe": 5}
            raise RuntimeError("inside")
    assert fi.search_parameters(index) == {"nprobe": 2}
    with fi.temporary_search_parameters(index, None):
        assert fi.search_parameters(index) == {"nprobe": 2}
    with pytest.raises(OmniferError, match="efSearch") as exc:
        fi.set_search_parameters(index, efSearch=16)
    assert_one_line(exc)
    assert not fi.is_gpu_index(index) and fi.to_cpu(index) is index
    assert fi.to_gpu(index, []) is None

def test_build_is_seeded_and_takes_float16():
    x = clustered_unit(3000, 16, clusters=10, spread=1.0, seed=6)
    kwargs = dict(factory="IVF16,SQ8", device="cpu", train_size=1000, add_batch=700)
    a, again = fi.build_index(x, **kwargs), fi.build_index(x, **kwargs)
    half = fi.build_index(x.astype(np.float16), **kwargs)
    assert a.ntotal == half.ntotal == 3000
    ids = fi.search(a, x[:20], 5)[1]
    np.testing.assert_array_equal(ids, fi.search(again, x[:20], 5)[1])
    assert fi.recall_at_k(fi.search(half, x[:20], 5)[1], ids, 5) >= 0.8


def test_fake_gpu_path_returns_cpu_index(monkeypatch):
    calls = []
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 2)
    monkeypatch.setattr(faiss, "index_cpu_to_gpus_list",
                        lambda index, co=None, gpus=None, ngpu=-1: calls.append(gpus) or index)
    monkeypatch.setattr(faiss, "index_gpu_to_cpu", lambda index: calls.append("cpu") or index,
                        raising=False)
    assert fi.resolve_gpus("auto") == 2 and fi.resolve_gpus("cuda:1") == 1
    x = random_unit(500, 8, seed=7)
    index = fi.build_index(x, factory="IVF4,SQ8", device="auto", train_size=400)
    assert calls == [[0, 1], "cpu"]
    fi.search(index, x[:3], 2, device="cuda:1")
    assert calls[-1] == [1]
    with pytest.raises(OmniferError) as exc:
        fi.resolve_gpus("cuda:5")
    assert_one_line(exc)


def test_gpu_clone_failure_falls_back_to_cpu(monkeypatch, caplog):
    def refuse(index, co=None, gpus=None, ngpu=-1):
        raise RuntimeError("Error in clone at GpuCloner.cpp:1: HNSW not supported on GPU")

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_gpus_list", refuse)
    x = random_unit(300, 8, seed=8)
    with caplog.at_level(logging.WARNING, logger=fi.__name__):
        index = fi.build_index(x, factory="HNSW8", device="auto")
    assert index.ntotal == 300 and "using the CPU" in caplog.text
    assert fi.search_parameters(index) == {"efSearch": 128}


# ---------------------------------------------------------------- save and load

def test_write_read_round_trip(tmp_path, flat_case):
    db, queries, index = flat_case
    path = fi.write_index(index, tmp_path / "idx", factory="Flat", count=len(db), dim=64,
                          extra={"model": "tiny"})
    assert path == tmp_path / "idx" / "index.faiss"
    loaded, sidecar = fi.read_index(tmp_path / "idx")
    assert sidecar == {
        "factory": "Flat", "metric": "inner_product",
        "similarity": "cosine (L2-normalised embeddings)", "dim": 64, "count": 5000,
        "search_params": {}, "faiss_version": faiss.__version__, "model": "tiny",
    }
    for got, want in zip(fi.search(loaded, queries, 10), fi.search(index, queries, 10)):
        np.testing.assert_array_equal(got, want)


def test_ivf_round_trip_keeps_search_params(tmp_path):
    x = clustered_unit(2000, 16, clusters=10, spread=1.0, seed=9)
    index = fi.build_index(x, factory="IVF8,SQ8", device="cpu")
    fi.write_index(index, tmp_path, factory="IVF8,SQ8", count=2000, dim=16)
    loaded, sidecar = fi.read_index(tmp_path)
    assert sidecar["search_params"] == fi.search_parameters(loaded) == {"nprobe": 8}


def test_corrupt_index_is_one_line_error(tmp_path, flat_case):
    db, _, index = flat_case
    fi.write_index(index, tmp_path, factory="Flat", count=len(db), dim=64)
    (tmp_path / "index.faiss").write_bytes(b"not a faiss index at all")
    with pytest.raises(OmniferError, match="not a readable FAISS index") as exc:
        fi.read_index(tmp_path)
    assert_one_line(exc)


def test_missing_and_mismatched_files(tmp_path, flat_case):
    db, _, index = flat_case
    with pytest.raises(OmniferError, match="does not exist") as exc:
        fi.read_index(tmp_path / "nowhere")
    assert_one_line(exc)
    fi.write_index(index, tmp_path, factory="Flat", count=len(db), dim=64)
    sidecar = json.loads((tmp_path / "index.json").read_text())
    (tmp_path / "index.json").write_text(json.dumps({**sidecar, "count": 4999}))
    with pytest.raises(OmniferError, match="count=4999") as exc:
        fi.read_index(tmp_path)
    assert_one_line(exc)
    with pytest.raises(OmniferError, match="count=10") as exc:
        fi.write_index(index, tmp_path, factory="Flat", count=10, dim=64)
    assert_one_line(exc)


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("vectors, match", [
    (np.zeros(8, dtype=np.float32), "2-D float array"),
    (np.zeros((4, 8), dtype=np.int64), "2-D float array"),
    (np.zeros((0, 8), dtype=np.float32), "empty"),
    (np.array([[1.0, 0.0], [np.nan, 1.0]], dtype=np.float32), "row 1 holds NaN"),
])
def test_bad_vectors_are_one_line_errors(vectors, match):
    with pytest.raises(OmniferError, match=match) as exc:
        fi.build_index(vectors, device="cpu")
    assert_one_line(exc)


def test_bad_search_arguments_are_one_line_errors(flat_case):
    db, queries, index = flat_case
    cases = [
        (lambda: fi.search(index, queries[:, :32], 10), "dimension 32"),
        (lambda: fi.search(index, queries, 0), "k must be"),
        (lambda: fi.exact_knn(queries, db, 0), "k must be"),
        (lambda: fi.exact_knn(queries, db[:, :8], 3), "dimension 8"),
        (lambda: fi.search(index, queries, 5, params={"nprobe": 4}), "does not apply"),
        (lambda: fi.search(index, queries, 5, params={"nprobe": 0}), "positive integer"),
        (lambda: fi.build_index(db, factory="IVFx,SQ8", device="cpu"), "factory string"),
        (lambda: fi.build_index(db[:100], factory="IVF512,SQ8", device="cpu"), "training"),
        (lambda: fi.recall_at_k(np.zeros((2, 3)), np.zeros((3, 3)), 3), "recall_at_k"),
        (lambda: fi.choose_factory(0, 64), "n must be"),
    ]
    for call, match in cases:
        with pytest.raises(OmniferError, match=match) as exc:
            call()
        assert_one_line(exc)


def test_recall_at_k_counts_overlap():
    exact = np.array([[1, 2, 3], [4, 5, 6]])
    approx = np.array([[3, 2, 9], [-1, -1, -1]])
    assert fi.recall_at_k(approx, exact, 3) == pytest.approx(2 / 6)
    assert fi.recall_at_k(exact, exact, 2) == 1.0


def test_import_is_cheap():
    import subprocess
    import sys

    code = ("import sys, omnifer.pools.faiss_index; "
            "print('faiss' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_faiss_is_one_line(monkeypatch):
    """A plain install without a FAISS extra gets the install command, not an ImportError."""
    import sys

    from omnifer.errors import OmniferError
    from omnifer.pools.faiss_index import build_index

    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(OmniferError, match=r"FAISS is not installed.*omnifer\[cpu\]"):
        build_index(np.eye(4, dtype=np.float32), factory="Flat", device="cpu")
