"""Data-parallel training throughput: ``omnifer train`` in 1 process against N processes.

Every arm is the real command on the same synthetic labeled set, with the same global batch;
the arms alternate, repeat after repeat, so that the machine's load affects them alike. The
rate is rank 0's training phase of each epoch as the run records it (``train_samples /
train_seconds`` in ``members/0/history.json``: every process's share of the global batch,
the gradient exchange included; validation and checkpoints excluded), the first epoch left
out as warm-up.

    python bench/bench_ddp.py --preset small --backbone convnet --size 64 --epochs 3

On CPUs the processes share the cores: ``--threads T`` gives the 1-process arm T threads and
each of N processes T / N. On a GPU machine (``--device cuda``) each process drives one GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from omnifer import host


def synth(work: Path, preset: str) -> Path:
    data = work / f"synth-{preset}"
    if not (data / "labeled.toml").is_file():
        subprocess.run([sys.executable, "-m", "omnifer", "-q", "synth", str(data), "--preset",
                        preset], check=True)
    return data / "labeled.toml"


def train(ws: Path, data: Path, args: argparse.Namespace, nproc: int) -> float:
    """One ``omnifer train`` run; the median samples/s of its epochs after the first."""
    cmd = [sys.executable, "-m", "omnifer", "-q", "-w", str(ws), "train", "--fresh",
           "--data", str(data), "--backbone", args.backbone, "--size", str(args.size),
           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
           "--device", args.device, "--patience", "0", "--nproc-per-node", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, args.threads // nproc))}
    subprocess.run(cmd, check=True, env=env)
    run = sorted((ws / ".omnifer" / "runs" / "train").iterdir())[-1]
    history = json.loads((run / "members" / "0" / "history.json").read_text())
    rates = [e["train_samples"] / e["train_seconds"] for e in history[1:]]
    return statistics.median(rates)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--backbone", default="convnet")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "omnifer-bench-ddp")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = synth(args.work, args.preset)
    rates: dict[int, list[float]] = {n: [] for n in args.processes}
    for r in range(args.repeats):
        for n in args.processes:
            rate = train(args.work / f"ws-{n}", data, args, n)
            rates[n].append(rate)
            print(f"repeat {r}: {n} process(es): {rate:.1f} samples/s", file=sys.stderr)
    base = statistics.median(rates[args.processes[0]])
    print(f"\n{host.describe()}, "
          f"{args.backbone} {args.size} px, global batch {args.batch_size}, {args.epochs} "
          f"epochs, {args.repeats} repeats, {args.threads} threads in all\n")
    print("| processes | threads each | samples/s (median) | ratio |")
    print("|---|---|---|---|")
    for n in args.processes:
        rate = statistics.median(rates[n])
        print(f"| {n} | {max(1, args.threads // n)} | {rate:.1f} | {rate / base:.2f} |")


if __name__ == "__main__":
    main()
