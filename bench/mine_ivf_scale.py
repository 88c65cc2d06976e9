"""The IVF candidate path of ``omnifer mine`` at pool scale: build time, search time, recall.

Uses ``bench_mine.py``'s pool file (``--n`` float16 unit vectors of dimension ``--dim``, a
``--plant`` fraction of them near copies of the ``--m`` labeled vectors, so that there is
something to mine). Builds the index ``omnifer index`` would build for that many faces
(``choose_factory``: IVF with SQ8 codes above 1M), finds the candidates above ``--threshold``
with ``candidates_from_index`` (range search of each labeled vector), scores them exactly, and
compares the selected rows with the exact pass over every row (recall = share of the exact
selection that the IVF path also selects).

    python bench/mine_ivf_scale.py --n 5800000 --plant 0.01
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_mine import labeled_set, pool_file, scale_arguments, vm_hwm_mb  # noqa: E402

from omnifer.mining import engine  # noqa: E402
from omnifer.pools.faiss_index import build_index, choose_factory, search_parameters  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    scale_arguments(p)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    labeled, labels = labeled_set(args)
    pool = np.load(pool_file(args, args.plant), mmap_mode="r")
    knobs = dict(k=args.k, score="max", floor=args.threshold, device=args.device)
    rows = {}

    t0 = time.perf_counter()
    exact = engine.evidence(pool, labeled, labels, args.classes, **knobs)
    rows["exact"] = exact.rows[engine.select(exact, threshold=args.threshold)]
    t_exact = time.perf_counter() - t0

    factory = choose_factory(len(pool), pool.shape[1])
    t0 = time.perf_counter()
    index = build_index(pool, factory=factory, device=args.device)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    candidates = engine.candidates_from_index(index, labeled, args.threshold, device=args.device)
    t_search = time.perf_counter() - t0
    t0 = time.perf_counter()
    ivf = engine.evidence(pool, labeled, labels, args.classes, rows=candidates, **knobs)
    rows["ivf"] = ivf.rows[engine.select(ivf, threshold=args.threshold)]
    t_score = time.perf_counter() - t0

    found = np.isin(rows["exact"], rows["ivf"]).mean() if len(rows["exact"]) else float("nan")
    extra = np.setdiff1d(rows["ivf"], rows["exact"]).size
    print(f"{os.cpu_count()} cores; pool {len(pool):,} x {pool.shape[1]} float16, planted "
          f"{args.plant:g}; {args.m:,} labeled; threshold {args.threshold}; device {args.device}")
    print("| path | index | seconds | candidates | selected | recall of the exact selection |")
    print("|---|---|---|---|---|---|")
    print(f"| exact pass | - | {t_exact:.1f} | {len(exact):,} | {len(rows['exact']):,} | 1 |")
    print(f"| IVF candidates + exact scoring | {factory} {search_parameters(index)} | "
          f"build {t_build:.1f} + search {t_search:.1f} + score {t_score:.1f} | "
          f"{len(candidates):,} | {len(rows['ivf']):,} | {found:.4f} (not in exact: {extra}) |")
    print(f"peak RSS {vm_hwm_mb():.0f} MB")
    print(f"\ncommand: python {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
