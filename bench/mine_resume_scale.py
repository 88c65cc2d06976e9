"""A mining pass killed in the middle and started again, at pool scale (default 5.8M x 10k).

The exact pass of ``omnifer mine`` (``engine.evidence`` with a checkpoint folder, as ``mine``
runs it) over ``bench_mine.py``'s memory-mapped float16 pool with planted near copies, three
times, each in a fresh process:

1. uninterrupted, into folder A;
2. into folder B, killed with SIGKILL once ``--kill-at`` of its spans are saved;
3. the same command again on folder B: it loads the saved spans and scores the rest.

The evidence of 3 (every row, score, vote and neighbour) must equal that of 1, and so must the
mined selection at the threshold. Prints the times, the spans saved before the kill and the
comparison.

    python bench/mine_resume_scale.py --n 5800000 --plant 0.01
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_mine import labeled_set, pool_file, scale_arguments  # noqa: E402

from omnifer.mining import engine  # noqa: E402

FIELDS = ("rows", "scores", "votes", "neighbours", "neighbour_scores")


def child(args: argparse.Namespace) -> None:
    """One pass in this process; writes its evidence beside the checkpoint folder."""
    labeled, labels = labeled_set(args)
    pool = np.load(args.child_pool, mmap_mode="r")
    t0 = time.perf_counter()
    ev = engine.evidence(pool, labeled, labels, args.classes, k=args.k, score="max",
                         floor=args.threshold, device="cpu", checkpoint=args.child_folder)
    seconds = time.perf_counter() - t0
    selected = engine.select(ev, threshold=args.threshold)
    np.savez(Path(args.child_folder).with_suffix(".npz"), selected=selected,
             **{f: getattr(ev, f) for f in FIELDS})
    print(json.dumps({"seconds": seconds, "candidates": len(ev),
                      "selected": int(selected.sum())}))


def start(args: argparse.Namespace, path: str, folder: Path) -> subprocess.Popen:
    cmd = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--child-pool", path,
           "--child-folder", str(folder)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"pass failed with status {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    scale_arguments(p)
    p.add_argument("--kill-at", type=float, default=0.5,
                   help="share of the pass's spans saved when it is killed")
    p.add_argument("--child-pool", help=argparse.SUPPRESS)
    p.add_argument("--child-folder", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_pool:
        return child(args)
    path = pool_file(args, args.plant)
    work = Path(args.work_dir)
    a, b = work / "resume-a", work / "resume-b"
    for folder in (a, b):
        shutil.rmtree(folder, ignore_errors=True)
    first = finish(start(args, path, a))
    spans = len(list(a.glob("span-*.npz")))

    proc = start(args, path, b)
    t0 = time.perf_counter()
    while proc.poll() is None and len(list(b.glob("span-*.npz"))) < args.kill_at * spans:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_after = time.perf_counter() - t0
    saved = len(list(b.glob("span-*.npz")))
    resumed = finish(start(args, path, b))

    x, y = np.load(a.with_suffix(".npz")), np.load(b.with_suffix(".npz"))
    equal = {f: bool(np.array_equal(x[f], y[f])) for f in (*FIELDS, "selected")}
    print(f"\npool {args.n:,} x {args.dim} float16, labeled {args.m:,}, planted {args.plant:g}, "
          f"{os.cpu_count()} CPUs\n")
    print("| pass | seconds | spans scored | candidates | selected |")
    print("|---|---|---|---|---|")
    print(f"| uninterrupted | {first['seconds']:.1f} | {spans} | {first['candidates']:,} | "
          f"{first['selected']:,} |")
    print(f"| killed (SIGKILL) | {killed_after:.1f} | {saved} saved | | |")
    print(f"| started again | {resumed['seconds']:.1f} | {spans - saved} | "
          f"{resumed['candidates']:,} | {resumed['selected']:,} |")
    print(f"\nequal to the uninterrupted pass: {equal}")
    if not all(equal.values()):
        raise SystemExit("the resumed pass differs from the uninterrupted one")


if __name__ == "__main__":
    main()
