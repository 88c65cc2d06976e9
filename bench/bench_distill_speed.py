"""Time per iteration and total time of dm, gm and tm on real faces, with the CLI's CPU defaults.

Data: a saved sample table with expression labels (the default: the mined set of a demo
workspace), decoded at each ``--sizes`` px. Settings are those ``omnifer distill`` uses when no
GPU is present: ConvNet width 32, 64 real images per class per step (dm, gm), iterations dm
500, gm 200, tm 500, tm's 5 experts of 15 epochs. For each method and size the first
``--measure`` iterations are timed one by one (median s / iteration); tm's expert training is
timed in full. ``total`` is measured when ``--full`` names the method (it then runs all
default iterations), else it is ``setup + iterations x median`` and marked as projected.

    python bench/bench_distill_speed.py --data demo/.omnifer/runs/mine/<run>/mined.parquet
    python bench/bench_distill_speed.py --data ... --sizes 32 --full dm,tm
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

from omnifer import host
from omnifer.data import LabeledSet
from omnifer.data.cache import decoded_images
from omnifer.distill import METHODS, DistillConfig, distill, train_experts


def cpu_defaults(method: str, ipc: int) -> DistillConfig:
    """The settings of ``omnifer distill`` without a GPU; unset iterations: the method's."""
    config = DistillConfig(method=method, images_per_class=ipc).resolved(gpu=False)
    return config.replace(iterations=config.iterations or METHODS.get(method).iterations)


def arrays(data: LabeledSet, size: int, cache: str) -> tuple[np.ndarray, np.ndarray]:
    data = data.subset(data.masks()["expression"])
    x = np.asarray(decoded_images(data, size, cache)).transpose(0, 3, 1, 2)
    y = data.table["expression"].to_numpy(np.int64)
    present = np.unique(y)
    return np.ascontiguousarray(x, dtype=np.float32) / 255.0, np.searchsorted(present, y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a saved sample table (mined.parquet)")
    ap.add_argument("--methods", default="dm,gm,tm")
    ap.add_argument("--sizes", default="32,64")
    ap.add_argument("--measure", type=int, default=5, help="iterations timed per method and size")
    ap.add_argument("--full", default="", help="methods to run for all default iterations")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--cache", default=None, help="decoded-image cache [a temporary folder]")
    args = ap.parse_args()

    print("command: `python " + " ".join(shlex.quote(a) for a in sys.argv) + "`")
    print(f"machine: {host.describe()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    data = LabeledSet.load(args.data)
    cache = args.cache or tempfile.mkdtemp(prefix="omnifer-bench-")
    full = set(filter(None, args.full.split(",")))
    rows = []
    for size in map(int, args.sizes.split(",")):
        x, y = arrays(data, size, cache)
        n_classes = int(y.max()) + 1
        for method in args.methods.split(","):
            config = cpu_defaults(method, args.ipc)
            setup, experts = 0.0, None
            if method == "tm":
                t0 = time.perf_counter()
                experts = train_experts(x, y, n_classes=n_classes, width=config.width,
                                        seed=config.seed)
                setup = time.perf_counter() - t0
            iterations = config.iterations if method in full else args.measure
            stamps = [time.perf_counter()]
            result = distill(x, y, n_classes=n_classes,
                             **config.replace(iterations=iterations).distill_kwargs(),
                             experts=experts,
                             progress=lambda *_: stamps.append(time.perf_counter()))
            per = statistics.median(np.diff(stamps[1:] if len(stamps) > 2 else stamps))
            measured = method in full
            total = setup + result.seconds if measured else setup + config.iterations * per
            rows.append((method, size, len(y), per, setup, config.iterations, total, measured))
            print(f"{method} {size} px: {per:.3f} s / iteration, setup {setup:.0f} s",
                  flush=True)

    print("\n| method | px | images | s / iteration (median) | setup s | iterations | total |")
    print("|---|---|---|---|---|---|---|")
    for method, size, n, per, setup, its, total, measured in rows:
        tot = f"{total / 60:.1f} min" + ("" if measured else " (projected)")
        print(f"| {method} | {size} | {n} | {per:.3f} | {setup:.0f} | {its} | {tot} |")


if __name__ == "__main__":
    main()
