"""Rendering speed of the synthetic benchmark.

Per-core figure: one process renders pool-like samples (faces with the preset's nuisance
factors, JPEG-encoded to bytes in memory) at the given size. Optionally times a full
``generate`` run (files, tables, contact sheets) with the given number of worker processes.

    python bench/bench_synth.py                       # 2000 faces at 112 px, one process
    python bench/bench_synth.py --generate small --workers 2
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from omnifer import host  # noqa: E402
from omnifer.synth import generate, resolve_config  # noqa: E402
from omnifer.synth.sampling import identity_table, render_rows, sample_rows  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="faces to render for the per-core figure")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--preset", default="demo", help="preset whose nuisance factors are used")
    ap.add_argument("--split", default="test", choices=["test", "pool"],
                    help="test: faces only; pool: faces + distractors at the preset's rates")
    ap.add_argument("--repeat", type=int, default=3, help="take the best of this many runs")
    ap.add_argument("--generate", default=None, metavar="PRESET", help="also time generate(PRESET)")
    ap.add_argument("--workers", type=int, default=None, help="worker processes for --generate")
    args = ap.parse_args(argv)

    print("command:", " ".join([os.path.basename(sys.executable)] + sys.argv))
    print(f"machine: {host.describe()}, python {platform.python_version()}")
    cfg = resolve_config(args.preset, size=args.size)
    ids = identity_table(cfg, 0, "labeled")
    best = 0.0
    for r in range(args.repeat):
        rng = np.random.default_rng(r)
        t0 = time.perf_counter()
        rows = sample_rows(rng, args.n, cfg, args.split, 0, ids, shifted=False)
        data = render_rows(rng, rows, ids, args.size, cfg, shifted=False)
        dt = time.perf_counter() - t0
        best = max(best, args.n / dt)
        print(f"  run {r}: {args.n} images in {dt:.2f}s = {args.n / dt:.0f} images/s "
              f"(mean JPEG {np.mean([len(d) for d in data]) / 1024:.1f} KiB)")
    print(f"per-core: {best:.0f} faces/s at {args.size}x{args.size} incl. JPEG encoding (1 process, best of {args.repeat})")
    if args.generate:
        out = tempfile.mkdtemp(prefix="bench_synth_")
        try:
            res = generate(os.path.join(out, "b"), preset=args.generate, workers=args.workers)
            total = sum(v for k, v in res.counts.items() if k in ("expr", "va", "au", "multi", "test", "pool"))
            print(f"generate(preset={args.generate!r}, workers={args.workers or 'auto'}): {total} images "
                  f"in {res.seconds:.1f}s = {total / res.seconds:.0f} images/s end to end")
        finally:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
