"""Pool embedding against its ceiling, for every registered backbone, at ``omnifer index``'s
CPU defaults.

The ceiling of embedding on a machine's cores is ``1 / (decode time + model time)`` per
image: reading, decoding and hashing a face in one process, then running the model on it at
the default torch threads. For each backbone, in a fresh process of its own (as ``omnifer
index`` embeds with one model per process) and in rotating order over ``--rounds`` rounds, on
the same synthetic 112 px JPEG faces (``bench_index.py``'s pool):

- decode: ``read_chunk`` over the subset's keys in 64-key chunks, in this process;
- model: ``Embedder`` on the same images already decoded, batch 64;
- end to end: ``embed_pool`` at ``omnifer index``'s CPU batch (64) and the default torch
  threads, with each of ``--workers`` reading processes (default: ``omnifer index``'s).

Medians per backbone; the table gives both ratios: end to end against the bare model and
against the ceiling.

    python bench/index_ceiling.py --pool-dir /tmp/omnifer-bench-pool --workers 0,1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_index import (bare, checkpoint, decoded, e2e, ensure_faces,  # noqa: E402
                         machine, pool_view)

ROW = "row: "  #: what starts a child process's JSON row
SUBSETS = {"convnet": 4000, "mobilenet_v3_small": 4000, "mobilenet_v3_large": 2000,
           "resnet18": 1000, "resnet50": 500}  #: faces per round, by the model's speed


def decode_seconds(pool: Path) -> tuple[float, int]:
    """Seconds per image to read, decode and hash ``pool`` in this process, and the count."""
    from omnifer.pools import open_pool
    from omnifer.pools.chunks import CHUNK, read_chunk

    source = open_pool(pool)
    keys = source.keys()
    t0 = time.perf_counter()
    for i in range(0, len(keys), CHUNK):
        read_chunk(source, keys[i:i + CHUNK], size=112)
    return (time.perf_counter() - t0) / len(keys), len(keys)


def measure(root: Path, backbone: str, n: int, rounds: int, workers: list[int]) -> dict:
    import torch

    from omnifer.models.embedder import Embedder
    from omnifer.pools.config import IndexConfig

    batch = IndexConfig().resolved_batch_size(gpu=False)
    pool, model = pool_view(root, n), checkpoint(root, backbone)
    images = decoded(pool)
    embedder = Embedder(model, device="cpu", batch_size=batch)
    embedder(images[:batch])  # warm-up
    arms = {"decode": lambda: decode_seconds(pool)[0],
            "model": lambda: 1.0 / bare(embedder, images),
            **{w: (lambda w=w: 1.0 / e2e(pool, model, w, batch)) for w in workers}}
    seconds: dict = {a: [] for a in arms}
    names = list(arms)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            seconds[name].append(arms[name]())
    med = {a: statistics.median(v) for a, v in seconds.items()}
    return {"backbone": backbone, "faces": n, "batch": batch, "threads": torch.get_num_threads(),
            "decode_ms": med["decode"] * 1e3, "model_ms": med["model"] * 1e3,
            "bare": 1.0 / med["model"], "ceiling": 1.0 / (med["decode"] + med["model"]),
            "e2e": {w: 1.0 / med[w] for w in workers},
            "e2e_rounds": {w: [1.0 / s for s in seconds[w]] for w in workers}}


def main() -> None:
    from omnifer.models.backbones import BACKBONES

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool-dir", default="/tmp/omnifer-bench-pool")
    ap.add_argument("--backbones", default=",".join(BACKBONES.names()))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--write-procs", type=int, default=2)
    ap.add_argument("--workers", default="default",
                    help="comma list of reading-worker counts to compare; default: omnifer "
                         "index's default on a CPU")
    ap.add_argument("--row", action="store_true",
                    help="measure the one backbone in this process and print its row as JSON")
    args = ap.parse_args()
    from omnifer.pools.config import IndexConfig

    default = IndexConfig().resolved_workers(os.cpu_count() or 1, gpu=False)
    workers = [default if w == "default" else int(w) for w in args.workers.split(",")]
    root = Path(args.pool_dir)
    backbones = args.backbones.split(",")
    ensure_faces(root, max(SUBSETS.get(b, 1000) for b in backbones), args.write_procs)
    if args.row:
        row = measure(root, backbones[0], SUBSETS.get(backbones[0], 1000), args.rounds, workers)
        print(ROW + json.dumps(row))
        return
    rows = []
    for backbone in backbones:
        child = subprocess.run(
            [sys.executable, __file__, "--pool-dir", str(root), "--backbones", backbone,
             "--rounds", str(args.rounds), "--workers", ",".join(map(str, workers)), "--row"],
            check=True, stdout=subprocess.PIPE, text=True).stdout
        row = json.loads(child.split(ROW)[-1])
        row["e2e"] = {int(w): v for w, v in row["e2e"].items()}
        row["e2e_rounds"] = {int(w): v for w, v in row["e2e_rounds"].items()}
        for w in workers:
            print(f"{backbone}, {w} workers: end to end {row['e2e'][w]:.1f}/s, rounds "
                  + ", ".join(f"{r:.1f}" for r in row["e2e_rounds"][w]), flush=True)
        rows.append(row)
    print(f"\n{machine()}; 112 px, batch {rows[0]['batch']}, {rows[0]['threads']} torch "
          f"threads; omnifer index's default here: {default} reading worker(s); medians of "
          f"{args.rounds} rounds\n")
    print("| model | faces | decode, ms/image | model, ms/image | ceiling, images/s | "
          "bare model, images/s | reading workers | end to end, images/s | / bare | "
          "/ ceiling |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        for w in workers:
            mark = " (default)" if w == default else ""
            print(f"| {r['backbone']} | {r['faces']} | {r['decode_ms']:.3f} | "
                  f"{r['model_ms']:.3f} | {r['ceiling']:.1f} | {r['bare']:.1f} | {w}{mark} | "
                  f"{r['e2e'][w]:.1f} | {r['e2e'][w] / r['bare']:.1%} | "
                  f"{r['e2e'][w] / r['ceiling']:.1%} |")


if __name__ == "__main__":
    main()
