"""Pool embedding throughput and memory: ``embed_pool`` end to end against the bare model.

Throughput: on one pool of synthetic 112x112 JPEG faces (folders of 1,000, written once and
cached under ``--pool-dir``), the end-to-end arm is ``embed_pool(open_pool(pool), out, ...)``
(listing, reading, JPEG decoding and hashing in DataLoader worker processes, embedding,
shard writing) and the bare arm is ``Embedder(...)(images)`` on the same images already
decoded in memory, same model, same batch size. The arms
alternate in one process, in a rotating order, so the machine's load affects them alike;
the medians and their ratios are reported per torch thread count, and full end-to-end
passes over the whole pool are timed in fresh processes.

Memory: each pool size is embedded end to end in a fresh subprocess, which reports the
high-water RSS (VmHWM) of itself and of its largest worker, and sampled peaks of the summed
PSS and RSS of itself and its workers. ``gather()`` + ``build_pool_index()`` over the shards
of each size run in another fresh subprocess: they hold the flat index (4 * D bytes per
face), which grows with the pool by design.

A short profile splits the end-to-end cost: decoding per image, the worker pipeline alone,
the model, and shard writing.

    python bench/bench_index.py --pool-dir /tmp/omnifer-bench-pool \\
        --model mobilenet_v3_small:4000 --model resnet18:1000 --threads 2,1 \\
        --workers 0,1,2 --sizes 20000,80000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

FOLDER = 1000  #: faces per pool subfolder
SIZE = 112
QUALITY = 90
HERE = Path(__file__).resolve()


# ---------------------------------------------------------------- the pool on disk

def _write_folder(args: tuple[str, int]) -> int:
    """Render folder ``k`` (1,000 faces, seeded by ``k``) as JPEG files, atomically."""
    root, k = Path(args[0]), args[1]
    from PIL import Image

    from omnifer.synth.config import resolve_config
    from omnifer.synth.sampling import sample_faces

    final = root / "faces" / f"{k:05d}"
    if final.is_dir() and len(os.listdir(final)) == FOLDER:
        return 0
    tmp = root / "faces" / f".{k:05d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    images, _ = sample_faces(FOLDER, np.random.default_rng([2024, k]),
                             config=resolve_config("demo"), size=SIZE, jpeg=False)
    for i, img in enumerate(images):
        Image.fromarray(img).save(tmp / f"{k * FOLDER + i:07d}.jpg", quality=QUALITY)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return FOLDER


def ensure_faces(root: Path, n: int, procs: int) -> float:
    """Make sure ``root/faces`` holds the first ``n`` faces; returns seconds spent writing."""
    from multiprocessing import Pool

    folders = -(-n // FOLDER)
    todo = [k for k in range(folders)
            if not ((root / "faces" / f"{k:05d}").is_dir()
                    and len(os.listdir(root / "faces" / f"{k:05d}")) == FOLDER)]
    if not todo:
        return 0.0
    t0 = time.perf_counter()
    print(f"writing {len(todo) * FOLDER} faces to {root / 'faces'} ...", flush=True)
    with Pool(procs) as pool:
        for _ in pool.imap_unordered(_write_folder, [(str(root), k) for k in todo]):
            pass
    return time.perf_counter() - t0


def pool_view(root: Path, n: int) -> Path:
    """A pool folder of the first ``n`` faces (hard links into ``root/faces``)."""
    view = root / f"pool-{n}"
    folders = -(-n // FOLDER)
    marker = view / ".complete"
    if marker.exists():
        return view
    shutil.rmtree(view, ignore_errors=True)
    for k in range(folders):
        src, dst = root / "faces" / f"{k:05d}", view / f"{k:05d}"
        dst.mkdir(parents=True)
        names = sorted(os.listdir(src))[: n - k * FOLDER]
        for name in names:
            try:
                os.link(src / name, dst / name)
            except OSError:
                shutil.copyfile(src / name, dst / name)
    marker.write_text("")
    return view


def checkpoint(root: Path, backbone: str) -> Path:
    """A randomly initialised (seeded) model checkpoint at 112 px."""
    from omnifer.models import ModelConfig, build_model, save_checkpoint

    path = root / "models" / backbone
    if not (path / "model.json").is_file():
        save_checkpoint(build_model(ModelConfig(backbone=backbone, input_size=SIZE), seed=0), path)
    return path


def embed_config(pool: Path, model: Path, batch_size: int):
    from omnifer.pools.embed_config import EmbedConfig

    return EmbedConfig(pool=str(pool), source="folder", model=str(model),
                       model_fingerprint=f"bench:{model.name}", input_size=SIZE,
                       batch_size=batch_size, device="cpu")


def decoded(pool: Path) -> np.ndarray:
    """Every image of ``pool`` decoded into memory (uint8 [n, S, S, 3])."""
    from PIL import Image

    files = sorted(pool.rglob("*.jpg"))
    out = np.empty((len(files), SIZE, SIZE, 3), np.uint8)
    for i, f in enumerate(files):
        with Image.open(f) as im:
            out[i] = np.asarray(im.convert("RGB"))
    return out


# ---------------------------------------------------------------- memory sampling

def _proc_tree(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += kids.get(p, [])
    return tree


def _kib(pid: int, path: str, field: str) -> int:
    try:
        with open(f"/proc/{pid}/{path}") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeSampler(threading.Thread):
    """Sampled peaks over this process and its descendants: the summed PSS and RSS, and the
    largest high-water RSS (VmHWM) of a descendant."""

    def __init__(self, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.every, self.pss, self.rss, self.child_hwm, self.procs = every, 0, 0, 0, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        me = os.getpid()
        while not self._stop_event.is_set():
            tree = _proc_tree(me)
            self.pss = max(self.pss, sum(_kib(p, "smaps_rollup", "Pss") for p in tree))
            self.rss = max(self.rss, sum(_kib(p, "status", "VmRSS") for p in tree))
            self.child_hwm = max([self.child_hwm,
                                  *(_kib(p, "status", "VmHWM") for p in tree if p != me)])
            self.procs = max(self.procs, len(tree))
            self._stop_event.wait(self.every)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def peak_mib(pid: int | str = "self") -> float:
    """The high-water RSS (VmHWM) of a process, MiB.

    ``getrusage(...).ru_maxrss`` is not used for the subprocesses: on Linux a process started
    by fork/vfork + exec keeps its parent's RSS at the time of the fork as its starting peak,
    so a child of this (large) process would report at least this process's size. VmHWM
    belongs to the address space, which exec replaces."""
    return _kib(pid, "status", "VmHWM") / 1024


# ---------------------------------------------------------------- child processes

def child_embed(pool: Path, out: Path, model: Path, workers: int, batch_size: int,
                threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)

    from omnifer.pools import open_pool
    from omnifer.pools.embed import embed_pool

    base = _kib(os.getpid(), "status", "VmRSS") / 1024
    sampler = TreeSampler()
    sampler.start()
    t0 = time.perf_counter()
    result = embed_pool(open_pool(pool), out, config=embed_config(pool, model, batch_size),
                        workers=workers)
    seconds = time.perf_counter() - t0
    sampler.stop()
    return {"faces": result.counts["faces"], "seconds": seconds,
            "rate": result.counts["faces"] / seconds, "shards": len(result.shards),
            "baseline_mib": base, "self_peak_mib": peak_mib(),
            "worker_peak_mib": sampler.child_hwm / 1024,
            "tree_pss_peak_mib": sampler.pss / 1024, "tree_rss_peak_mib": sampler.rss / 1024,
            "processes": sampler.procs, "threads": torch.get_num_threads()}


def child_index(shards_dir: Path, out: Path) -> dict:
    import faiss  # noqa: F401 - imported before the baseline, like the index code does
    import pyarrow.compute  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from omnifer.errors import OmniferError
    from omnifer.pools.index import gather

    out.mkdir(parents=True, exist_ok=True)
    base = _kib(os.getpid(), "status", "VmRSS") / 1024
    shards = sorted(shards_dir.glob("shard-*.parquet"))
    t0 = time.perf_counter()
    emb, _, n = gather(shards, out)
    t_gather = time.perf_counter() - t0
    gather_peak = peak_mib()
    t0 = time.perf_counter()
    try:
        from omnifer.pools.index import build_pool_index

        from omnifer.pools.faiss_index import choose_factory

        dim = np.load(emb, mmap_mode="r").shape[1]
        try:
            _, sidecar = build_pool_index(emb, out, device="cpu")
            how = f"build_pool_index ({sidecar['factory']})"
        except OmniferError as exc:  # raised after building: report it, keep the measurement
            how = f"build_pool_index ({choose_factory(n, dim)}); it raised: {exc}"
    except ImportError as exc:  # the FAISS wrapper module is not there
        import faiss

        vectors = np.load(emb, mmap_mode="r")
        index = faiss.IndexFlatIP(vectors.shape[1])
        for lo in range(0, len(vectors), 65536):
            index.add(np.asarray(vectors[lo:lo + 65536], np.float32))
        faiss.write_index(index, str(out / "index.faiss"))
        how = f"faiss.IndexFlatIP directly ({exc})"
    t_index = time.perf_counter() - t0
    dim = np.load(emb, mmap_mode="r").shape[1]
    return {"faces": n, "dim": dim, "gather_s": t_gather, "index_s": t_index, "how": how,
            "baseline_mib": base, "gather_peak_mib": gather_peak,
            "peak_mib": peak_mib(),
            "flat_mib": n * dim * 4 / 2**20}


def run_child(args: list[str]) -> dict:
    cmd = [sys.executable, str(HERE), *args]
    print("  $ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"child failed: {' '.join(cmd)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- throughput

def e2e(pool: Path, model: Path, workers: int, batch_size: int) -> float:
    from omnifer.pools import open_pool
    from omnifer.pools.embed import embed_pool

    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        result = embed_pool(open_pool(pool), out, config=embed_config(pool, model, batch_size),
                            workers=workers)
        seconds = time.perf_counter() - t0
    return result.counts["faces"] / seconds


def bare(embedder, images: np.ndarray) -> float:
    t0 = time.perf_counter()
    embedder(images)
    return len(images) / (time.perf_counter() - t0)


def throughput(root: Path, backbone: str, subset: int, workers: list[int], rounds: int,
               batch_size: int, threads: int) -> dict:
    import torch

    from omnifer.models.embedder import Embedder

    torch.set_num_threads(threads)
    pool, model = pool_view(root, subset), checkpoint(root, backbone)
    images = decoded(pool)
    embedders = {"bare": Embedder(model, device="cpu", batch_size=batch_size)}
    for embedder in embedders.values():
        embedder(images[:batch_size])  # warm-up
    arms = [*embedders, *[f"e2e w={w}" for w in workers]]
    rates: dict[str, list[float]] = {a: [] for a in arms}
    print(f"\n## throughput: {backbone} @ {SIZE}px, {torch.get_num_threads()} torch threads, "
          f"{subset} faces per round, batch {batch_size}, {rounds} rounds "
          f"(load average {os.getloadavg()[0]:.2f})", flush=True)
    for r in range(rounds):
        order = arms[r % len(arms):] + arms[:r % len(arms)]
        for arm in order:
            if arm in embedders:
                rates[arm].append(bare(embedders[arm], images))
            else:
                rates[arm].append(e2e(pool, model, int(arm.split("=")[1]), batch_size))
        print(f"round {r + 1}: " + ", ".join(f"{a} {rates[a][-1]:.1f}/s" for a in arms)
              + f" (load average {os.getloadavg()[0]:.2f})", flush=True)
    med = {a: statistics.median(v) for a, v in rates.items()}
    best = max(workers, key=lambda w: med[f"e2e w={w}"])
    return {"backbone": backbone, "subset": subset, "threads": threads, "rates": rates,
            "median": med, "best_workers": best}


# ---------------------------------------------------------------- profile

def profile(root: Path, backbone: str, n: int, workers: list[int], batch_size: int,
            threads: list[int]) -> dict:
    """Where end-to-end time goes, measured piece by piece on ``n`` faces."""
    import torch

    from omnifer.artifacts import ShardedWriter
    from omnifer.models.embedder import Embedder
    from omnifer.pools import open_pool
    from omnifer.pools.chunks import CHUNK, read_chunk
    from omnifer.pools.engines.local import local_chunks
    from omnifer.pools.shards import write_shard

    pool, model = pool_view(root, n), checkpoint(root, backbone)
    source = open_pool(pool)
    keys = source.keys()
    config = embed_config(pool, model, batch_size)
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    chunks = [read_chunk(source, keys[i:i + CHUNK], size=SIZE)
              for i in range(0, len(keys), CHUNK)]
    out["read + decode + hash, ms/image (in one process)"] = \
        (time.perf_counter() - t0) * 1000 / len(keys)
    for w in workers:
        t0 = time.perf_counter()
        got = sum(len(c.images) for c, _ in local_chunks(source, keys, config=config,
                                                         workers=w))
        out[f"DataLoader pipeline alone (no model), w={w}, images/s"] = \
            got / (time.perf_counter() - t0)
    images = np.concatenate([c.images for c in chunks])
    embs = []
    for th in threads:
        torch.set_num_threads(th)
        embedder = Embedder(model, device="cpu", batch_size=batch_size)
        embedder(images[:batch_size])
        out[f"model on {batch_size}-image batches, {th} threads, images/s"] = \
            bare(embedder, images)
        embs = [embedder.features(images)]
    rows = [{"key": k, "id": str(i), "face": 0, "status": "ok"} for i, k in enumerate(keys)]
    with tempfile.TemporaryDirectory() as tmp:
        writer = ShardedWriter(Path(tmp) / "shards", config_fingerprint="bench")
        t0 = time.perf_counter()
        write_shard(writer, 0, rows, embs)
        out["shard writing, ms/image"] = (time.perf_counter() - t0) * 1000 / n
    return out


# ---------------------------------------------------------------- report

def machine() -> str:
    from omnifer import host

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{host.describe()}, load average {load}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool-dir", default=str(Path(tempfile.gettempdir()) / "omnifer-bench-pool"),
                    help="where the synthetic pool is written once and reused")
    ap.add_argument("--model", action="append", default=None, metavar="BACKBONE[:SUBSET]",
                    help="a throughput measurement: backbone and faces per round "
                         "(repeatable; default mobilenet_v3_small:4000 and resnet18:1000)")
    ap.add_argument("--workers", default="1,2", help="DataLoader worker counts to compare")
    ap.add_argument("--threads", default=None,
                    help="torch thread counts to compare (default: torch's own count)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--memory-backbone", default="mobilenet_v3_small",
                    help="backbone of the full passes (memory and full-pool throughput)")
    ap.add_argument("--sizes", default="20000,80000", help="pool sizes of the full passes")
    ap.add_argument("--profile-faces", type=int, default=2000)
    ap.add_argument("--skip", default="", help="comma list of: throughput, profile, memory")
    ap.add_argument("--full-workers", type=int, default=None,
                    help="workers of the full passes (default: best of the first throughput)")
    ap.add_argument("--full-threads", type=int, default=None,
                    help="torch threads of the full passes (default: best of the first "
                         "throughput)")
    ap.add_argument("--write-procs", type=int, default=2, help="processes writing the pool")
    ap.add_argument("--child-embed", nargs=6,
                    metavar=("POOL", "OUT", "MODEL", "W", "BATCH", "THREADS"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--child-index", nargs=2, metavar=("SHARDS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child_embed:
        pool, out, model, w, b, th = args.child_embed
        print(json.dumps(child_embed(Path(pool), Path(out), Path(model), int(w), int(b),
                                     int(th))))
        return
    if args.child_index:
        print(json.dumps(child_index(Path(args.child_index[0]), Path(args.child_index[1]))))
        return

    import torch

    root = Path(args.pool_dir)
    skip = set(filter(None, args.skip.split(",")))
    workers = [int(w) for w in args.workers.split(",")]
    threads = ([int(t) for t in args.threads.split(",")] if args.threads
               else [torch.get_num_threads()])
    sizes = [int(s) for s in args.sizes.split(",")]
    specs = args.model or ["mobilenet_v3_small:4000", "resnet18:1000"]
    specs = [(name, int(n or 4000)) for name, _, n in (s.partition(":") for s in specs)]
    print("$ " + " ".join(shlex.quote(c) for c in [sys.executable, *sys.argv]))
    print(f"machine: {machine()}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, default "
          f"{torch.get_num_threads()} torch threads in the embedding process (DataLoader "
          "workers use 1 each)")
    t_write = ensure_faces(root, max(sizes + [n for _, n in specs]), args.write_procs)
    print(f"pool: {root / 'faces'} ({SIZE}x{SIZE} JPEG q{QUALITY}, folders of {FOLDER}); "
          + (f"written now in {t_write:.0f} s" if t_write else "reused"), flush=True)

    results = []
    if "throughput" not in skip:
        for name, subset in specs:
            for th in threads:
                results.append(throughput(root, name, subset, workers, args.rounds,
                                          args.batch_size, th))
    prof = None
    if "profile" not in skip:
        prof = profile(root, args.memory_backbone, args.profile_faces, workers, args.batch_size,
                       threads)
    first = [r for r in results if r["backbone"] == args.memory_backbone]
    top = max(first, key=lambda r: r["median"][f"e2e w={r['best_workers']}"]) if first else None
    full_w = args.full_workers or (top["best_workers"] if top else workers[-1])
    full_th = args.full_threads or (top["threads"] if top else threads[0])
    mem, idx = [], []
    if "memory" not in skip:
        print(f"\n## full passes: {args.memory_backbone} @ {SIZE}px, workers={full_w}, "
              f"{full_th} torch threads, each in a fresh process", flush=True)
        model = checkpoint(root, args.memory_backbone)
        runs = root / "runs"
        for n in sizes:
            pool = pool_view(root, n)
            out = runs / f"{args.memory_backbone}-{n}"
            shutil.rmtree(out, ignore_errors=True)
            mem.append(run_child(["--child-embed", str(pool), str(out), str(model), str(full_w),
                                  str(args.batch_size), str(full_th)]))
            print(f"  {n}: {mem[-1]['rate']:.1f} faces/s, {mem[-1]['seconds']:.0f} s, "
                  f"peak RSS {mem[-1]['self_peak_mib']:.0f} MiB (load average "
                  f"{os.getloadavg()[0]:.2f})", flush=True)
        for n in sizes:
            out = runs / f"{args.memory_backbone}-{n}"
            shutil.rmtree(out / "index-run", ignore_errors=True)
            idx.append(run_child(["--child-index", str(out / "shards"), str(out / "index-run")]))

    print("\n# results\n")
    print(f"machine: {machine()}; torch {torch.__version__}")
    if results:
        print(f"\n| model | torch threads | faces/round | arm | rounds (images/s) | median "
              f"images/s | vs bare b={args.batch_size} |")
        print("|---|---|---|---|---|---|---|")
        for r in results:
            b = r["median"]["bare"]
            for arm, rates in r["rates"].items():
                label = f"bare b={args.batch_size}" if arm == "bare" else arm
                print(f"| {r['backbone']} @ {SIZE} | {r['threads']} | {r['subset']} | {label} | "
                      f"{', '.join(f'{v:.1f}' for v in rates)} | {r['median'][arm]:.1f} | "
                      f"{r['median'][arm] / b:.1%} |")
        print()
        for r in results:
            w = r["best_workers"]
            e = r["median"][f"e2e w={w}"]
            print(f"{r['backbone']}, {r['threads']} threads: best workers={w}; end to end / bare "
                  f"= {e / r['median']['bare']:.1%} (bare at batch {args.batch_size}); "
                  "target >= 85%")
        same = [r for r in first if r["threads"] == full_th]
        if mem and same:
            b = same[0]["median"]["bare"]
            for n, m in zip(sizes, mem):
                print(f"{args.memory_backbone}, {full_th} threads: full {n}-face end-to-end pass "
                      f"(fresh process, w={full_w}): {m['rate']:.1f} images/s = "
                      f"{m['rate'] / b:.1%} of the median bare rate (batch {args.batch_size})")
    if prof:
        print(f"\n| profile: {args.memory_backbone} @ {SIZE}, {args.profile_faces} faces | value |")
        print("|---|---|")
        for k, v in prof.items():
            print(f"| {k} | {v:.2f} |")
    if mem:
        print(f"\n| embed_pool, {args.memory_backbone} @ {SIZE}, w={full_w}, {full_th} threads | "
              "faces | seconds | images/s | RSS before embedding (MiB) | peak RSS, main process "
              "(VmHWM, MiB) | peak RSS, largest worker (VmHWM, MiB) | sampled peak PSS, all "
              "processes (MiB) | sampled peak RSS, all processes (MiB) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for n, m in zip(sizes, mem):
            print(f"| pool of {n} | {m['faces']} | {m['seconds']:.0f} | {m['rate']:.1f} | "
                  f"{m['baseline_mib']:.0f} | {m['self_peak_mib']:.0f} | "
                  f"{m['worker_peak_mib']:.0f} | "
                  f"{m['tree_pss_peak_mib']:.0f} | {m['tree_rss_peak_mib']:.0f} |")
        print("\n| gather + build_pool_index | faces | D | gather s | index s | RSS before (MiB) "
              "| peak RSS after gather (VmHWM, MiB) | peak RSS (VmHWM, MiB) | flat float32 index "
              "(MiB) | how |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for n, m in zip(sizes, idx):
            print(f"| pool of {n} | {m['faces']} | {m['dim']} | {m['gather_s']:.1f} | "
                  f"{m['index_s']:.1f} | {m['baseline_mib']:.0f} | {m['gather_peak_mib']:.0f} | "
                  f"{m['peak_mib']:.0f} | {m['flat_mib']:.0f} | {m['how']} |")
    print(f"\nmachine at the end: {machine()}")


if __name__ == "__main__":
    main()
