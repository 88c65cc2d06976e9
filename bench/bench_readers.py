"""Reading speed of the labeled-data readers on the synthetic benchmark.

Generates a preset once (kept in --data), then times ``read_labeled`` on its labeled.toml
(four databases in four formats: class folders, CSV, Parquet, saved datasets) and on the
class-folder database alone. Every image is read, hashed and fully decoded.

    python bench/bench_readers.py                    # demo preset, 3 repeats, median
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from omnifer import host  # noqa: E402
from omnifer.data import read_labeled  # noqa: E402
from omnifer.synth import generate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--data", default="/tmp/omnifer-bench-readers")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    out = os.path.join(args.data, args.preset)
    if not os.path.exists(os.path.join(out, "synth.json")):
        generate(out, preset=args.preset, seed=0)
    print(f"# {' '.join(sys.argv)} | {host.describe()}, "
          f"python {platform.python_version()}")
    for label, path in (("labeled.toml (4 formats)", os.path.join(out, "labeled.toml")),
                        ("class folders", os.path.join(out, "labeled", "expr"))):
        times, n = [], 0
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            n = len(read_labeled(path))
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        print(f"{label:<26} {n:>6} images  median {med:6.2f} s  {n / med:8.0f} images/s")


if __name__ == "__main__":
    main()
