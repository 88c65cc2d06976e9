"""Build time, search time, memory and recall@k of the pool index on clustered unit vectors.

The data is a mixture of Gaussians around random unit centres (``--clusters``, ``--spread``:
cluster mates have cosine ~ 1 / (1 + spread**2)) in a random ``--intrinsic-dim`` subspace,
rows L2-normalised like the embeddings the index stage writes; ``--clusters 0`` gives uniform
random unit vectors, the hardest case for an inverted file. Queries are drawn from the same
distribution. The approximate index (``--factory``, by default what ``choose_factory`` picks
for a 5.8M pool) is compared with exact ``Flat`` search at its default search settings and at
each ``--nprobe`` of the sweep. Recall depends on how many vectors share a list: the second
example gives the lists of a 5.8M pool the same geometry at 64 dimensions, so it runs on a
2 cores in about ten minutes.

    python bench/bench_faiss.py --n 500000 --train-size 131072     # 512-d, ~5 min on 2 cores
    python bench/bench_faiss.py --n 5800000 --dim 64 --intrinsic-dim 0   # a 5.8M pool's lists
    python bench/bench_faiss.py --n 200000 --clusters 0 --factory IVF2048,SQ8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from omnifer import host  # noqa: E402
from omnifer.pools import faiss_index as fi  # noqa: E402


def clustered_unit(n: int, dim: int, *, clusters: int, spread: float, intrinsic_dim: int,
                   seed: int, block: int = 65_536) -> np.ndarray:
    """``n`` L2-normalised float32 rows of a mixture of Gaussians (uniform when clusters=0).

    The mixture lives in a random ``intrinsic_dim``-dimensional subspace of R^dim (all of it
    when intrinsic_dim is 0 or >= dim), as real embeddings fill only part of their space.
    """
    rng = np.random.default_rng(seed)
    low = dim if intrinsic_dim <= 0 or intrinsic_dim >= dim else intrinsic_dim
    basis = None
    if low < dim:
        basis = np.linalg.qr(rng.standard_normal((dim, low)))[0].T.astype(np.float32)
    centres = rng.standard_normal((max(clusters, 1), low), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, block):
        m = min(block, n - start)
        x = rng.standard_normal((m, low), dtype=np.float32)
        if clusters:
            x = centres[rng.integers(0, clusters, m)] + x * np.float32(spread / np.sqrt(low))
        if basis is not None:
            x = x @ basis
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def index_bytes(index, factory: str, n: int, dim: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        return os.path.getsize(fi.write_index(index, tmp, factory=factory, count=n, dim=dim))


def machine() -> str:
    import faiss

    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    return (f"{host.describe()}, {mem:.0f} GiB RAM, python {platform.python_version()}, "
            f"numpy {np.__version__}, "
            f"faiss {faiss.__version__} ({faiss.get_num_gpus()} GPUs, "
            f"{faiss.omp_get_max_threads()} threads)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="database vectors")
    ap.add_argument("--dim", type=int, default=512, help="embedding size")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--clusters", type=int, default=None, help="default n // 50; 0 = uniform")
    ap.add_argument("--spread", type=float, default=0.7)
    ap.add_argument("--intrinsic-dim", type=int, default=64, help="0 = the full dim")
    ap.add_argument("--factory", default=fi.choose_factory(5_800_000, 512))
    ap.add_argument("--train-size", type=int, default=262_144)
    ap.add_argument("--nprobe", default="16,64,128,256,1024", help="sweep, comma-separated")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    clusters = args.n // 50 if args.clusters is None else args.clusters

    print(f"# {' '.join(sys.argv)}")
    print(f"# {machine()}")
    print(f"# data: {args.n} + {args.queries} unit vectors, dim {args.dim} "
          f"(intrinsic {args.intrinsic_dim or args.dim}), {clusters or 'no'} clusters, "
          f"spread {args.spread}")
    t0 = time.perf_counter()
    x = clustered_unit(args.n + args.queries, args.dim, clusters=clusters, spread=args.spread,
                       intrinsic_dim=args.intrinsic_dim, seed=args.seed)
    db, queries = x[:args.n], x[args.n:]
    print(f"# generated in {time.perf_counter() - t0:.1f} s")

    rows = []

    def report(label, index, params, build_s, size, truth):
        t = time.perf_counter()
        _, ids = fi.search(index, queries, args.k, params=params, device=args.device)
        search_s = time.perf_counter() - t
        row = {"index": label, "params": params or fi.search_parameters(index),
               "build_s": build_s, "search_s": search_s, "qps": args.queries / search_s,
               "bytes": size,
               "recall": 1.0 if truth is None else fi.recall_at_k(ids, truth, args.k)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        return ids

    t = time.perf_counter()
    flat = fi.build_index(db, factory="Flat", device=args.device)
    build_s = time.perf_counter() - t
    truth = report("Flat", flat, None, build_s, index_bytes(flat, "Flat", args.n, args.dim), None)
    del flat

    t = time.perf_counter()
    approx = fi.build_index(db, factory=args.factory, device=args.device,
                            train_size=args.train_size, seed=args.seed)
    build_s = time.perf_counter() - t
    size = index_bytes(approx, args.factory, args.n, args.dim)
    report(args.factory + " (default)", approx, None, build_s, size, truth)
    default = fi.default_search_params(args.factory, args.n)
    if "nprobe" in default:
        nlist = int(re.search(r"IVF(\d+)", args.factory).group(1))
        for nprobe in (int(v) for v in args.nprobe.split(",") if v):
            if nprobe != default["nprobe"] and nprobe <= nlist:
                report(args.factory, approx, {"nprobe": nprobe}, None, None, truth)

    print(f"\n{'index':<26} {'params':<16} {'build s':>8} {'search s':>9} {'qps':>8} "
          f"{'MiB':>8} {'recall@' + str(args.k):>10}")
    for r in rows:
        params = ",".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
        mib = "" if r["bytes"] is None else f"{r['bytes'] / 2**20:.0f}"
        build = "" if r["build_s"] is None else f"{r['build_s']:.1f}"
        print(f"{r['index']:<26} {params:<16} {build:>8} {r['search_s']:>9.3f} {r['qps']:>8.0f} "
              f"{mib:>8} {r['recall']:>10.4f}")
    print(f"# total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
