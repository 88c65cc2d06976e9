"""Speed and memory of the exact mining pass (``omnifer.mining.engine.evidence``).

Mines ``--n`` random unit vectors of dimension ``--dim``, stored float16 in a memory-mapped
``.npy`` file (like the index stage's embeddings; made in blocks under ``--work-dir`` and reused),
against ``--m`` labeled unit vectors in ``--classes`` classes at ``--threshold`` (also the
candidate floor). Achieved GFLOP/s = 2 n m D / seconds is compared with this machine's float32
matrix multiply (numpy sgemm of one engine block times labeled.T, median of 5 runs before and 5
after the mining) in the same process. Each measurement runs in a fresh process so that its peak
RSS is its own; n/4 rows run too, to show that memory does not grow with n. Random
512-d vectors are never 0.9-similar, so nothing passes the floor; ``--plant F`` makes a fraction
F of pool rows near copies of labeled rows (cosine ~0.78-0.99), so that the per-row top-k work
after the floor runs too.

    python bench/bench_mine.py                     # 1M x 512 vs 10k labeled, ~5 min on 2 cores
    python bench/bench_mine.py --plant 0.01 --rounds 3
    python bench/bench_mine.py --n 5800000 --checkpoint   # MS1MV2-sized, spans saved as in mine
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from omnifer.mining import engine  # noqa: E402
from omnifer.mining.blocks import block_size  # noqa: E402


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def labeled_set(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([args.seed, 1])
    return unit(rng.standard_normal((args.m, args.dim), dtype=np.float32)), \
        np.arange(args.m) % args.classes


def pool_file(args: argparse.Namespace, plant: float) -> str:
    """The float16 pool as an .npy file, written in blocks once and reused."""
    name = f"pool-{args.n}x{args.dim}-seed{args.seed}-plant{plant:g}.npy"
    path = os.path.join(args.work_dir, name)
    if os.path.exists(path):
        return path
    os.makedirs(args.work_dir, exist_ok=True)
    labeled, _ = labeled_set(args)
    tmp = path + ".tmp"
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)),
              "fortran_order": False, "shape": (args.n, args.dim)}
    with open(tmp, "wb") as f:  # plain writes: a written memmap would stay in this process's RSS
        np.lib.format.write_array_header_1_0(f, header)
        step = 65_536
        for i, start in enumerate(range(0, args.n, step)):
            rng = np.random.default_rng([args.seed, 2, i])
            x = rng.standard_normal((min(step, args.n - start), args.dim), dtype=np.float32)
            near = np.flatnonzero(rng.random(len(x)) < plant)
            spread = rng.uniform(0.1, 0.8, (len(near), 1)).astype(np.float32)
            x[near] = labeled[rng.integers(0, args.m, len(near))] * np.sqrt(args.dim) \
                + spread * x[near]
            f.write(unit(x).astype(np.float16).tobytes())
    os.replace(tmp, path)
    return path


def scale_arguments(p: argparse.ArgumentParser) -> None:
    """The pool-scale benchmarks' shared options: an MS1MV2-sized pool with planted copies."""
    p.add_argument("--n", type=int, default=5_800_000, help="pool rows")
    p.add_argument("--dim", type=int, default=512, help="embedding dimension")
    p.add_argument("--m", type=int, default=10_000, help="labeled rows")
    p.add_argument("--classes", type=int, default=7)
    p.add_argument("--threshold", type=float, default=0.9, help="threshold and candidate floor")
    p.add_argument("--plant", type=float, default=0.01,
                   help="share of pool rows that are near copies of labeled rows")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", default="/tmp/omnifer-bench-mine")


def child(args: argparse.Namespace) -> None:
    """One measurement in this process: prints a JSON line."""
    labeled, labels = labeled_set(args)
    pool = np.load(args.child_pool, mmap_mode="r")[:args.child_rows]
    block = args.block or block_size(None, args.m)

    def sgemm_seconds(repeats: int = 5) -> list[float]:
        """One block times labeled.T; buffers are freed again, so that RSS is the engine's."""
        x = unit(np.random.default_rng(0).standard_normal((block, args.dim), dtype=np.float32))
        buf, times = np.empty((block, args.m), np.float32), []
        for _ in range(repeats + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            np.matmul(x, labeled.T, out=buf)
            times.append(time.perf_counter() - t0)
        return times[1:]

    sgemm = sgemm_seconds()
    seconds, selected = [], 0
    for _ in range(args.rounds):
        folder = tempfile.mkdtemp(dir=args.work_dir) if args.checkpoint else None
        t0 = time.perf_counter()
        ev = engine.evidence(pool, labeled, labels, args.classes, k=args.k, score=args.score,
                             floor=args.threshold, block=args.block, device=args.device,
                             checkpoint=folder)
        selected = int(engine.select(ev, threshold=args.threshold).sum())
        seconds.append(time.perf_counter() - t0)
        if folder is not None:
            shutil.rmtree(folder)
    sgemm += sgemm_seconds()  # before and after, as other work on the machine comes and goes
    gflops = 2 * block * args.m * args.dim / np.median(sgemm) / 1e9
    print(json.dumps({"seconds": float(np.median(seconds)), "sgemm": gflops, "block": block,
                      "candidates": len(ev), "selected": selected, "hwm_mb": vm_hwm_mb(),
                      "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def vm_hwm_mb() -> float:
    """This process's own peak RSS (Linux VmHWM). ru_maxrss also counts the peak of the parent
    that started the process (Linux keeps it across exec), so both are reported."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return float("nan")


def measure(args: argparse.Namespace, path: str, rows: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), *sys.argv[1:],
           "--child-pool", path, "--child-rows", str(rows)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    scale_arguments(p)
    # 1M rows; a pool with planted copies is mined too only when --plant is given
    p.set_defaults(n=1_000_000, plant=0.0)
    p.add_argument("--score", default="max", choices=engine.SCORES,
                   help="max: one planted near copy is enough to pass (random classes)")
    p.add_argument("--block", type=int, default=None, help="rows per block (default: engine's)")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--rounds", type=int, default=1, help="repeats; medians are reported")
    p.add_argument("--checkpoint", action="store_true",
                   help="save each finished span as `omnifer mine` does (resumable pass)")
    p.add_argument("--child-pool", help=argparse.SUPPRESS)
    p.add_argument("--child-rows", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_pool:
        return child(args)

    runs = [(0.0, args.n // 4), (0.0, args.n)]
    if args.plant:
        runs.append((args.plant, args.n))
    print(f"{os.cpu_count()} cores, numpy {np.__version__}; m={args.m} D={args.dim} "
          f"C={args.classes} k={args.k} score={args.score} threshold={args.threshold} "
          f"device={args.device}; checkpoint={args.checkpoint}; times are medians of "
          f"{args.rounds} round(s)\n")
    print("| pool rows | planted | seconds | GFLOP/s | sgemm GFLOP/s | ratio | block | candidates "
          "| selected | peak RSS MB (VmHWM) | ru_maxrss MB | pool file read MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for plant, rows in runs:
        path = pool_file(args, plant)
        r = measure(args, path, rows)
        gflops = 2 * rows * args.m * args.dim / r["seconds"] / 1e9
        print(f"| {rows:,} | {plant:g} | {r['seconds']:.2f} | {gflops:.0f} | {r['sgemm']:.0f} | "
              f"{gflops / r['sgemm']:.0%} | {r['block']} | {r['candidates']:,} | {r['selected']:,} "
              f"| {r['hwm_mb']:.0f} | {r['maxrss_mb']:.0f} | {rows * args.dim * 2 / 2**20:.0f} |",
              flush=True)
    print(f"\ncommand: python {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
