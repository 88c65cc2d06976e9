"""FAISS index over L2-normalised face embeddings: choose, build, save, load and search.

Similarity is the inner product, which for unit vectors is the cosine. The index type follows
the pool size (``choose_factory``):

- up to ``FLAT_LIMIT`` vectors, ``Flat``: exact search;
- above, ``IVF{nlist},SQ8``: an inverted file with ``nlist`` ~ 4 * sqrt(n) lists (a power of
  two) holding 8-bit scalar-quantised vectors, one byte per dimension (about 3 GB for 5.8M
  512-d embeddings, a quarter of ``Flat``). ``default_search_params`` probes
  ``nlist // 16`` lists: on a 5.8M-vector synthetic pool whose ten nearest neighbours have
  cosine ~0.75 that gives recall@10 ~0.96 against exact search (``bench/bench_faiss.py``). Pools
  whose neighbours are less similar need a larger ``nprobe``, passed to ``search``.

Indexes are built on the GPU when FAISS sees one (``device="auto"``) and always returned and
written CPU-side. ``exact_knn`` is the brute-force reference that approximate results are
checked against. ``search_parameters``, ``set_search_parameters`` and
``temporary_search_parameters`` read and set ``nprobe``/``efSearch``; ``to_gpu``, ``to_cpu``
and ``is_gpu_index`` move indexes between devices, on the GPU ids that
``omnifer.device.faiss_gpus`` gives for a device string. faiss loads inside the functions that
need it, so importing this module is cheap.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from omnifer.artifacts import atomic_path, atomic_write_json, read_json
from omnifer.device import faiss_gpus, import_faiss
from omnifer.errors import OmniferError, one_line

log = logging.getLogger(__name__)

#: Largest pool that gets an exact ``Flat`` index.
FLAT_LIMIT = 1_000_000
INDEX_FILE = "index.faiss"
SIDECAR_FILE = "index.json"
#: The largest k (and nprobe) FAISS GPU indexes accept.
GPU_MAX_K = 2048
#: The score FAISS gives a missing neighbour (id -1) under the inner-product metric.
MISSING_SCORE = float(-np.finfo(np.float32).max)
_CHECK_BLOCK = 65_536


# ---------------------------------------------------------------- choosing

def ivf_nlist(n: int) -> int:
    """Number of IVF lists for ``n`` vectors: 4 * sqrt(n) rounded to the nearest power of two."""
    _check_count("n", n)
    return 1 << max(0, round(math.log2(4 * math.sqrt(n))))


def choose_factory(n: int, dim: int) -> str:
    """FAISS factory string for ``n`` vectors of dimension ``dim``.

    ``"Flat"`` (exact) up to ``FLAT_LIMIT`` vectors, ``"IVF{nlist},SQ8"`` above.
    """
    _check_count("n", n)
    _check_count("dim", dim)
    if n <= FLAT_LIMIT:
        return "Flat"
    return f"IVF{ivf_nlist(n)},SQ8"


def default_search_params(factory: str, n: int) -> dict[str, int]:
    """Search settings for an index built with ``factory`` over ``n`` vectors.

    IVF: ``nprobe = nlist // 16``, at least 16 (or nlist) and at most ``GPU_MAX_K``; HNSW:
    ``efSearch = 128``; exact indexes need none. The rules depend on the index structure;
    ``n`` is checked only.
    """
    _check_count("n", n)
    ivf = re.search(r"IVF(\d+)", factory)
    if ivf:
        nlist = int(ivf.group(1))
        return {"nprobe": min(nlist, GPU_MAX_K, max(16, nlist // 16))}
    if "HNSW" in factory:
        return {"efSearch": 128}
    return {}


# ---------------------------------------------------------------- devices

def resolve_gpus(device: str = "auto") -> int:
    """Number of GPUs FAISS will use for ``device`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``).

    0 for ``cpu`` or when FAISS sees no GPU (faiss-cpu); ``auto`` and ``cuda`` use all visible.
    """
    return len(faiss_gpus(device))


def to_gpu(index: Any, gpus: Sequence[int]) -> Any | None:
    """A GPU copy of CPU ``index`` on ``gpus`` (e.g. ``omnifer.device.faiss_gpus(device)``), or
    None when ``gpus`` is empty or FAISS has no GPU version of this index type (the caller then
    stays on the CPU, and a warning says so). The copy keeps the index's search parameters."""
    if not gpus:
        return None
    faiss = import_faiss()

    try:
        return faiss.index_cpu_to_gpus_list(index, gpus=list(gpus))
    except RuntimeError as exc:
        log.warning("%s cannot run on the GPU (%s); using the CPU",
                    type(index).__name__, _faiss_message(exc))
        return None


def to_cpu(index: Any) -> Any:
    """A CPU copy of a GPU ``index``; a CPU index as it is."""
    faiss = import_faiss()

    return faiss.index_gpu_to_cpu(index) if is_gpu_index(index) else index


def is_gpu_index(index: Any) -> bool:
    """Whether ``index`` lives on GPUs (one GPU, or replicas or shards over several)."""
    faiss = import_faiss()

    if isinstance(index, (faiss.IndexReplicas, faiss.IndexShards)):  # multi-GPU copies
        return index.count() > 0 and is_gpu_index(index.at(0))
    return type(faiss.downcast_index(index)).__name__.startswith("Gpu")


# ---------------------------------------------------------------- building

def build_index(vectors: np.ndarray, *, factory: str = "auto", device: str = "auto",
                train_size: int = 262_144, seed: int = 0, add_batch: int = 65_536) -> Any:
    """Build an inner-product FAISS index over ``vectors`` (n x dim, L2-normalised rows).

    ``factory`` is a FAISS factory string or ``"auto"`` (``choose_factory``). Indexes that need
    training are trained on a random sample of at most ``train_size`` rows (drawn with
    ``seed``); vectors are added ``add_batch`` rows at a time, so float16 or memory-mapped
    inputs are converted one batch at a time. Builds on the GPU when ``resolve_gpus(device)``
    > 0 (on the CPU, with a warning, for types FAISS GPUs lack such as HNSW) and returns a
    CPU index with ``default_search_params`` applied.
    """
    x = _as_matrix(vectors, "vectors")
    _check_count("train_size", train_size)
    _check_count("add_batch", add_batch)
    n, dim = x.shape
    faiss = import_faiss()

    if factory == "auto":
        factory = choose_factory(n, dim)
    try:
        cpu_index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise OmniferError(f"factory {factory!r} is not a FAISS index factory string "
                           f"({_faiss_message(exc)}); use 'auto', 'Flat' or e.g. 'IVF4096,SQ8'"
                           ) from None
    gpu_index = to_gpu(cpu_index, faiss_gpus(device))
    index = cpu_index if gpu_index is None else gpu_index
    _warn_if_not_unit(x[:add_batch])

    if not index.is_trained:
        rows = np.random.default_rng(seed).choice(n, size=min(n, train_size), replace=False)
        sample = np.ascontiguousarray(x[np.sort(rows)], dtype=np.float32)
        log.info("training %s on %d of %d vectors", factory, len(sample), n)
        try:
            index.train(sample)
        except RuntimeError as exc:
            raise OmniferError(f"training {factory!r} on {len(sample)} vectors failed "
                               f"({_faiss_message(exc)}); use factory='auto' or fewer IVF lists"
                               ) from None
    for start in range(0, n, add_batch):
        index.add(np.ascontiguousarray(x[start:start + add_batch], dtype=np.float32))
    log.info("added %d vectors to %s", n, factory)

    if gpu_index is not None:
        index = faiss.index_gpu_to_cpu(gpu_index)
    set_search_parameters(index, **default_search_params(factory, n))
    return index


def _warn_if_not_unit(x: np.ndarray) -> None:
    norms = np.linalg.norm(np.asarray(x, dtype=np.float32), axis=1)
    worst = float(np.abs(norms - 1).max())
    if worst > 1e-2:
        log.warning("vectors are not L2-normalised (a row has norm %.3f); inner-product scores "
                    "are then not cosines", float(norms[np.abs(norms - 1).argmax()]))


# ---------------------------------------------------------------- saving and loading

def write_index(index: Any, directory: str | os.PathLike, *, factory: str, count: int, dim: int,
                extra: dict[str, Any] | None = None) -> Path:
    """Write ``directory/index.faiss`` and its sidecar ``directory/index.json``; return the
    index path. GPU indexes are copied to the CPU first; both writes are atomic."""
    faiss = import_faiss()

    index = to_cpu(index)
    if index.ntotal != count or index.d != dim:
        raise OmniferError(f"index holds {index.ntotal} vectors of dimension {index.d}, "
                           f"not count={count} dim={dim}; pass the index's own count and dim")
    directory = Path(directory)
    path = directory / INDEX_FILE
    with atomic_path(path) as tmp:
        faiss.write_index(index, os.fspath(tmp))
    sidecar = {
        "factory": factory,
        "metric": "inner_product",
        "similarity": "cosine (L2-normalised embeddings)",
        "dim": int(dim),
        "count": int(count),
        "search_params": search_parameters(index),
        "faiss_version": faiss.__version__,
        **(extra or {}),
    }
    atomic_write_json(directory / SIDECAR_FILE, sidecar)
    return path


def read_index(directory: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """Load ``directory/index.faiss`` and its sidecar; check that they belong together."""
    faiss = import_faiss()

    directory = Path(directory)
    path = directory / INDEX_FILE
    if not path.is_file():
        raise OmniferError(f"{path} does not exist; pass the folder that holds {INDEX_FILE} "
                           "or build the index first")
    sidecar = read_json(directory / SIDECAR_FILE)
    try:
        index = faiss.read_index(os.fspath(path))
    except RuntimeError as exc:
        raise OmniferError(f"{path} is not a readable FAISS index ({_faiss_message(exc)}); "
                           "rebuild the index") from None
    for key, actual in (("count", index.ntotal), ("dim", index.d)):
        if not isinstance(sidecar, dict) or sidecar.get(key) != actual:
            seen = sidecar.get(key) if isinstance(sidecar, dict) else sidecar
            raise OmniferError(f"{directory / SIDECAR_FILE} says {key}={seen!r} but {path} "
                               f"holds {key}={actual}; the files come from different builds, "
                               "rebuild the index")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise OmniferError(f"{path} uses FAISS metric {index.metric_type}, not inner product "
                           f"({faiss.METRIC_INNER_PRODUCT}); rebuild the index")
    return index, sidecar


# ---------------------------------------------------------------- searching

def search(index: Any, queries: np.ndarray, k: int, *, params: dict[str, int] | None = None,
           device: str = "auto", block: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours of each query row: scores float32 [nq, k], ids int64 [nq, k].

    Ids are -1 (score ``MISSING_SCORE``) where the index has fewer than k answers. ``params``
    (``nprobe`` for IVF, ``efSearch`` for HNSW) hold for this call only; without them the
    index's own settings apply. Queries go ``block`` rows at a time. On the GPU when
    ``resolve_gpus(device)`` > 0 and the index type and k allow it (k-NN only).
    """
    q = _as_matrix(queries, "queries", dim=index.d)
    _check_count("k", k)
    _check_count("block", block)
    gpus = faiss_gpus(device)
    if gpus and k > GPU_MAX_K:
        log.warning("k=%d is above the GPU limit of %d; searching on the CPU", k, GPU_MAX_K)
        gpus = []
    if is_gpu_index(index):
        gpus = []  # searched where it is
    with temporary_search_parameters(index, params):
        gpu_index = to_gpu(index, gpus)  # the GPU copy keeps the settings just applied
        runner = index if gpu_index is None else gpu_index
        scores = np.empty((len(q), k), dtype=np.float32)
        ids = np.empty((len(q), k), dtype=np.int64)
        for start in range(0, len(q), block):
            part = np.ascontiguousarray(q[start:start + block], dtype=np.float32)
            scores[start:start + len(part)], ids[start:start + len(part)] = runner.search(part, k)
    return scores, ids


# ---------------------------------------------------------------- search parameters

def search_parameters(index: Any) -> dict[str, int]:
    """The search settings in effect on ``index``: ``{"nprobe": n}`` for IVF indexes,
    ``{"efSearch": n}`` for HNSW ones, ``{}`` for exact ones."""
    faiss = import_faiss()

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return {"nprobe": int(ivf.nprobe)}
    hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
    return {"efSearch": int(hnsw.efSearch)} if hnsw is not None else {}


def set_search_parameters(index: Any, /, **params: int) -> None:
    """Set search settings on ``index`` (CPU or GPU), e.g. ``nprobe=64`` or ``efSearch=128``;
    a value that is not a positive integer, or a name the index lacks, is a one-line error."""
    faiss = import_faiss()

    space = faiss.GpuParameterSpace() if is_gpu_index(index) else faiss.ParameterSpace()
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise OmniferError(f"search parameter {name}={value!r} must be a positive integer; "
                               "e.g. nprobe=64 or efSearch=128")
        try:
            space.set_index_parameter(index, name, float(value))
        except RuntimeError:
            raise OmniferError(f"search parameter {name!r} does not apply to a "
                               f"{type(index).__name__}; use nprobe for IVF indexes, efSearch "
                               "for HNSW ones and none for Flat") from None


@contextmanager
def temporary_search_parameters(index: Any, params: dict[str, int] | None) -> Iterator[Any]:
    """Within the block, ``params`` (may be None or empty) hold on ``index``; the settings they
    replaced come back afterwards, also when the block raises."""
    previous = search_parameters(index)
    restore = {name: previous[name] for name in params or {} if name in previous}
    try:
        set_search_parameters(index, **(params or {}))
        yield index
    finally:
        set_search_parameters(index, **restore)


# ---------------------------------------------------------------- exact reference

def exact_knn(queries: np.ndarray, database: np.ndarray, k: int, *,
              block: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner-product k-NN in numpy: scores float32 [nq, k], ids int64 [nq, k].

    The reference for approximate search. Works on tiles of at most ``block`` queries and
    about 32M scores, never nq x N at once. Missing answers (k > N) are id -1 with
    ``MISSING_SCORE``, as FAISS gives them.
    """
    q = _as_matrix(queries, "queries")
    db = _as_matrix(database, "database", dim=q.shape[1])
    _check_count("k", k)
    _check_count("block", block)
    scores = np.full((len(q), k), MISSING_SCORE, dtype=np.float32)
    ids = np.full((len(q), k), -1, dtype=np.int64)
    for qs in range(0, len(q), block):
        qb = np.asarray(q[qs:qs + block], dtype=np.float32)
        best_s, best_i = scores[qs:qs + len(qb)], ids[qs:qs + len(qb)]
        db_block = max(k, (1 << 25) // len(qb))
        for ds in range(0, len(db), db_block):
            s = qb @ np.asarray(db[ds:ds + db_block], dtype=np.float32).T
            i = np.broadcast_to(np.arange(ds, ds + s.shape[1], dtype=np.int64), s.shape)
            best_s, best_i = _top_k(np.concatenate([best_s, s], axis=1),
                                    np.concatenate([best_i, i], axis=1), k)
        scores[qs:qs + len(qb)], ids[qs:qs + len(qb)] = best_s, best_i
    return scores, ids


def _top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best columns of each row, best first."""
    if scores.shape[1] > k:
        keep = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        scores, ids = np.take_along_axis(scores, keep, 1), np.take_along_axis(ids, keep, 1)
    order = np.lexsort((ids, -scores))
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / k (ids -1 never count)."""
    _check_count("k", k)
    a, e = np.asarray(approx_ids), np.asarray(exact_ids)
    if a.ndim != 2 or e.ndim != 2 or len(a) != len(e) or min(a.shape[1], e.shape[1]) < k:
        raise OmniferError(f"recall_at_k needs two [nq, >={k}] id arrays, got shapes {a.shape} "
                           f"and {e.shape}; pass results of the same queries with k columns")
    a, e = a[:, :k], e[:, :k]
    hits = sum(len(np.intersect1d(r[r >= 0], t[t >= 0])) for r, t in zip(a, e))
    return hits / (k * len(a)) if len(a) else 0.0


# ---------------------------------------------------------------- checks

def _as_matrix(x: Any, what: str, *, dim: int | None = None) -> np.ndarray:
    """``x`` as a 2-D float array without NaN or infinities (checked block by block)."""
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.ndim != 2 or x.dtype.kind != "f":
        raise OmniferError(f"{what} must be a 2-D float array (one embedding per row), got shape "
                           f"{x.shape} dtype {x.dtype}; pass an (n, dim) float32 array")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise OmniferError(f"{what} is empty (shape {x.shape}); pass at least one embedding")
    if dim is not None and x.shape[1] != dim:
        raise OmniferError(f"{what} have dimension {x.shape[1]} but the index holds {dim}-d "
                           "vectors; embed them with the model that built the index")
    for start in range(0, len(x), _CHECK_BLOCK):
        bad = ~np.isfinite(x[start:start + _CHECK_BLOCK]).all(axis=1)
        if bad.any():
            raise OmniferError(f"{what} row {start + int(bad.argmax())} holds NaN or infinite "
                               "values; drop that row or embed it again")
    return x


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise OmniferError(f"{name} must be a positive integer, got {value!r}; pass {name} >= 1")


def _faiss_message(exc: BaseException) -> str:
    """A FAISS error without its 'Error in <function> at <file>:<line>:' prefix, on one line."""
    return re.sub(r"^Error in .*? at \S+:\d+: ", "", one_line(exc))
