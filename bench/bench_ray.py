"""Ray engine throughput and driver memory: ``embed_pool`` with the local engine against the ray
engine with 1 and 2 workers, and the ray driver's peak RSS on pools of each of ``--sizes``.

The pool is written once under ``--work`` by the project's synthetic generator
(``omnifer.synth.generate``, the function behind ``omnifer synth``) with a custom size: the
``demo`` preset's 112 px faces, small labeled sets, and a pool of the largest ``--sizes``
faces (folders of 5,000, distractors included); each smaller size is a view of its first
faces (hard links). The model is a randomly initialised (seeded) ``--backbone`` checkpoint at
112 px, as in ``bench_index.py``, embedded at ``--batch-size`` (64: ``omnifer index``'s CPU
default) on the CPU.

Every run is a fresh subprocess that embeds the whole pool into a fresh folder under
``--work``. A ray run first starts its local Ray instance (``2 x workers`` logical CPUs:
``workers`` reading tasks and ``workers`` model actors), outside the timing; the model
actors' start and the model loading are inside it, as the local engine's worker start is.
The local engine's driver runs the model with ``--local-threads`` torch threads (default 1,
as each ray CPU model actor has): on a shared 2-core machine two threads collapse under
contention. Throughput is faces (embedded rows) per second of the ``embed_pool`` call, the
median of ``--repeats`` rounds run in a rotating order, so the machine's load affects the
arms alike.
Driver memory is the high-water RSS (VmHWM) of the driver process only, reset just before
``embed_pool`` (``/proc/self/clear_refs``), next to its RSS at that moment; Ray's own
processes (raylet, object store, workers, actors) are not counted. Each ray run's shard files
are compared byte for byte with the local run's of the same pool.

    python bench/bench_ray.py --work /tmp/omnifer-bench-ray --sizes 20000,80000,320000 --repeats 3
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_index import machine  # noqa: E402

HERE = Path(__file__).resolve()
SIZE = 112
FOLDER = 5000  #: pool files per synthetic pool folder


# ---------------------------------------------------------------- the pool and the model

def ensure_pool(work: Path, n: int, seed: int) -> tuple[Path, float]:
    """A synthetic pool of ``n`` faces under ``work`` (written once); returns it and the
    seconds spent writing it now."""
    out = work / f"synth-{n}"
    if (out / "synth.json").is_file():
        return out / "pool", 0.0
    from omnifer.synth import generate

    shutil.rmtree(out, ignore_errors=True)
    print(f"writing a synthetic pool of {n} faces to {out} ...", flush=True)
    t0 = time.perf_counter()
    generate(out, preset="demo", seed=seed, size=SIZE, n_pool=n,
             n_identities_pool=max(n // 10, 100), pool_folder_size=FOLDER,
             n_expr=140, n_va=70, n_au=70, n_multi=70, n_test=140,
             workers=min(2, os.cpu_count() or 1))
    return out / "pool", time.perf_counter() - t0


def pool_view(pool: Path, n: int, work: Path) -> Path:
    """A pool folder of the first ``n`` files of ``pool`` in key order (hard links)."""
    from omnifer.pools import open_pool

    view = work / f"pool-{n}"
    if (view / ".complete").exists():
        return view
    shutil.rmtree(view, ignore_errors=True)
    keys = open_pool(pool).keys()
    if len(keys) < n:
        raise SystemExit(f"{pool} holds {len(keys)} files, fewer than {n}")
    for key in keys[:n]:
        (view / key).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(pool / key, view / key)
        except OSError:
            shutil.copyfile(pool / key, view / key)
    (view / ".complete").write_text("")
    return view


def checkpoint(work: Path, backbone: str) -> Path:
    """A randomly initialised (seeded) model checkpoint at 112 px."""
    from omnifer.models import ModelConfig, build_model, save_checkpoint

    path = work / "models" / backbone
    if not (path / "model.json").is_file():
        save_checkpoint(build_model(ModelConfig(backbone=backbone, input_size=SIZE), seed=0),
                        path)
    return path


# ---------------------------------------------------------------- one run, in a subprocess

def _kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def child(engine: str, workers: int, pool: Path, out: Path, model: Path,
          batch_size: int, threads: int) -> dict:
    """Embed ``pool`` into ``out`` with ``engine``; the run's rate and the driver's memory.

    torch, pyarrow and the engines are imported before the baseline RSS is taken, so that the
    driver's growth during ``embed_pool`` is what the run holds, not the libraries."""
    import pyarrow.parquet  # noqa: F401
    import torch

    torch.set_num_threads(threads)
    from omnifer.pools import open_pool
    from omnifer.pools.engines import ENGINES  # noqa: F401
    from omnifer.pools.embed import embed_pool
    from omnifer.pools.embed_config import EmbedConfig

    config = EmbedConfig(pool=str(pool), source="folder", model=str(model),
                         model_fingerprint=f"bench:{model.name}", input_size=SIZE,
                         batch_size=batch_size, device="cpu")
    source = open_pool(pool)
    ray_start = 0.0
    if engine == "ray":
        from omnifer.pools.engines.ray import connect

        t0 = time.perf_counter()
        connect(workers)
        ray_start = time.perf_counter() - t0
    before = _kib("VmRSS") / 1024
    try:  # restart the high-water mark here (Linux 4.0+); else it is the process's peak
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    t0 = time.perf_counter()
    result = embed_pool(source, out, config=config, engine=engine, workers=workers,
                        on_bad_files="skip")
    seconds = time.perf_counter() - t0
    peak = _kib("VmHWM") / 1024
    return {"faces": result.counts["faces"], "items": result.counts["items"],
            "duplicates": result.counts["duplicates"], "shards": len(result.shards),
            "seconds": seconds, "rate": result.counts["faces"] / seconds,
            "ray_start_s": ray_start, "rss_before_mib": before,
            "peak_mib": peak, "peak_reset": reset,
            "threads": torch.get_num_threads()}


def run_child(engine: str, workers: int, pool: Path, out: Path, model: Path,
              batch_size: int, threads: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, str(HERE), "--child", engine, str(workers), str(pool), str(out),
           str(model), str(batch_size), str(threads)]
    print("  $ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local instance
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"child failed: {' '.join(cmd)}")
    got = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"    {engine} w={workers}: {got['faces']} faces in {got['seconds']:.1f} s "
          f"({got['rate']:.1f}/s), driver peak {got['peak_mib']:.0f} MiB", flush=True)
    return got


def same_shards(a: Path, b: Path) -> bool:
    """Whether two runs wrote the same shard files, byte for byte."""
    names = sorted(p.name for p in (a / "shards").glob("shard-*"))
    if names != sorted(p.name for p in (b / "shards").glob("shard-*")):
        return False
    _, mismatch, errors = filecmp.cmpfiles(a / "shards", b / "shards", names, shallow=False)
    return not mismatch and not errors


# ---------------------------------------------------------------- the report

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "omnifer-bench-ray"),
                    help="where the pool, the model and the runs' shards are written (reused)")
    ap.add_argument("--sizes", default="20000,80000",
                    help="pool sizes: the throughput pool, then the larger memory pools")
    ap.add_argument("--repeats", type=int, default=3, help="throughput rounds (median)")
    ap.add_argument("--workers", default="1,2", help="ray worker counts to compare")
    ap.add_argument("--local-workers", type=int, default=2,
                    help="DataLoader workers of the local engine")
    ap.add_argument("--memory-workers", type=int, default=2,
                    help="ray workers of the memory runs")
    ap.add_argument("--backbone", default="mobilenet_v3_small")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--local-threads", type=int, default=1,
                    help="torch threads of the local engine's driver (a ray CPU model actor "
                         "has 1)")
    ap.add_argument("--child", nargs=7, help=argparse.SUPPRESS,
                    metavar=("ENGINE", "W", "POOL", "OUT", "MODEL", "BATCH", "THREADS"))
    args = ap.parse_args()
    if args.child:
        engine, w, pool, out, model, batch, threads = args.child
        print(json.dumps(child(engine, int(w), Path(pool), Path(out), Path(model),
                               int(batch), int(threads))))
        return

    import ray
    import torch

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    small, large = sizes[0], sizes[-1]
    ray_workers = [int(w) for w in args.workers.split(",")]
    print("$ " + " ".join(shlex.quote(c) for c in [sys.executable, *sys.argv]))
    print(f"machine: {machine()}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, ray "
          f"{ray.__version__}; local driver: {args.local_threads} torch thread(s) (default "
          f"here: {torch.get_num_threads()}); ray model actors: 1 CPU (1 torch thread) each")
    synth, t_write = ensure_pool(work, large, args.seed)
    print(f"pool: {synth} ({large} files, {SIZE} px JPEG); "
          + (f"written now in {t_write:.0f} s" if t_write else "reused"), flush=True)
    pools = {n: pool_view(synth, n, work) for n in sizes}
    model = checkpoint(work, args.backbone)
    runs = work / "runs"

    # throughput on the small pool: local, ray w=1, ray w=2, in rotating order
    arms = [("local", args.local_workers)] + [("ray", w) for w in ray_workers]
    got: dict[tuple[str, int], list[dict]] = {arm: [] for arm in arms}
    for r in range(args.repeats):
        print(f"round {r + 1} of {args.repeats}", flush=True)
        for engine, w in arms[r % len(arms):] + arms[:r % len(arms)]:
            out = runs / f"{small}-{engine}-{w}" / f"round{r}"
            got[(engine, w)].append(run_child(engine, w, pools[small], out, model,
                                              args.batch_size, args.local_threads))
    reference = runs / f"{small}-local-{args.local_workers}" / "round0"
    same = {arm: same_shards(runs / f"{small}-{arm[0]}-{arm[1]}" / "round0", reference)
            for arm in arms}

    # driver memory: ray on each larger pool (the small pool's runs are above)
    mem_arm = ("ray", args.memory_workers)
    if mem_arm not in got:
        got[mem_arm] = [run_child("ray", mem_arm[1], pools[small],
                                  runs / f"{small}-ray-{mem_arm[1]}" / "round0", model,
                                  args.batch_size, args.local_threads)]
    memory = {small: got[mem_arm][0]}
    for n in sizes[1:]:
        print(f"memory run: ray, {n} faces", flush=True)
        memory[n] = run_child("ray", mem_arm[1], pools[n], runs / f"{n}-ray-{mem_arm[1]}",
                              model, args.batch_size, args.local_threads)

    first = got[arms[0]][0]
    print(f"\npool: {small} files ({first['items']} items, {first['faces']} embedded, "
          f"{first['duplicates']} duplicates, {first['shards']} shards); {args.backbone} @ "
          f"{SIZE} px, batch {args.batch_size}, CPU; {args.repeats} rounds\n")
    print("| engine | workers | faces/s (median) | rounds, faces/s | driver peak RSS, MiB "
          "(median) | shards = local's |")
    print("|---|---|---|---|---|---|")
    base = statistics.median(g["rate"] for g in got[arms[0]])
    for arm in arms:
        rates = [g["rate"] for g in got[arm]]
        med = statistics.median(rates)
        rel = "" if arm == arms[0] else f" ({med / base:.2f}x local)"
        print(f"| {arm[0]} | {arm[1]} | {med:.1f}{rel} | {', '.join(f'{x:.1f}' for x in rates)}"
              f" | {statistics.median(g['peak_mib'] for g in got[arm]):.0f} | "
              f"{'yes' if same[arm] else 'NO'} |")
    reset = all(g["peak_reset"] for g in memory.values())
    print(f"\nRay driver memory (ray, {mem_arm[1]} workers; driver process only, VmHWM during "
          f"embed_pool{'' if reset else ' (not reset: whole process)'}):\n")
    print("| pool faces | embedded | shards | seconds | faces/s | driver RSS before, MiB | "
          "driver peak RSS, MiB | peak - before, MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for n, g in memory.items():
        print(f"| {n} | {g['faces']} | {g['shards']} | {g['seconds']:.1f} | {g['rate']:.1f} | "
              f"{g['rss_before_mib']:.0f} | {g['peak_mib']:.0f} | "
              f"{g['peak_mib'] - g['rss_before_mib']:.0f} |")
    starts = [g["ray_start_s"] for arm in arms if arm[0] == "ray" for g in got[arm]]
    print(f"\nray start (outside the timing): {statistics.median(starts):.1f} s median")


if __name__ == "__main__":
    main()
