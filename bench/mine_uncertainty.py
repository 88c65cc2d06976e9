"""Does ``omnifer mine --max-uncertainty`` raise mined precision at equal coverage?

On the synthetic benchmark (its hidden pool truth says which pool faces are which class or a
distractor), one mining is scored for each selected face's epistemic uncertainty and compared
at EQUAL numbers of kept faces N (shares of the mined set):

- (a) uncertainty: drop the most uncertain faces until N remain (what ``--max-uncertainty``
  does at the cut that keeps N);
- (b) score: drop the lowest-scored faces until N remain (a stricter threshold, the baseline).

Precision = kept faces whose mined label is their true expression (non-faces count as wrong).
Two scorings of the SAME mined set: the whole train run ("whole run": its members when it is
an ensemble, ``--ensemble``), and member 0 alone, copied out of the run so that it counts as a
single model (Monte-Carlo dropout; same weights, so the same embeddings and mined set). Against
a workspace whose train run is a single model (e.g. a copy of ``make demo``'s) both are dropout. The values come from ``omnifer mine
--max-uncertainty 1`` itself (the ``epistemic`` column), and one run at the cut of the first
share checks that the filter keeps what (a) keeps.

    python bench/mine_uncertainty.py --workspace /tmp/bench-unc --setting "" \\
        --setting "--target-precision 0.8" --setting "--no-calibrate --threshold 0.5" \\
        --setting "--no-calibrate --threshold -1"

The primitive model is a convnet ensemble (48 px, 24 epochs at lr 2e-3, no early stopping) on
the ``small`` preset: at 8 epochs and the default lr it stays at chance and its members agree
on everything (epistemic ~0), which measures nothing.

The workspace is reused: synth, train and index run only when absent.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import shutil
import sys
import time
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd

from omnifer.cli.main import main as omnifer
from omnifer.records import TrainRun
from omnifer.workspace import Workspace


def run(ws: Path, *args: str) -> dict:
    """``omnifer --json -w WS ARGS`` in-process; its JSON output."""
    buf = StringIO()
    with redirect_stdout(buf):
        try:
            omnifer(["-q", "--json", "-w", str(ws), *map(str, args)])
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise
    text = buf.getvalue().strip()
    return json.loads(text) if text else {}


def prepare(ws: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """synth, ensemble training and the index (member 0), when not there yet; the member's
    checkpoint folder and a copy of it outside the run (a single model)."""
    w = Workspace(ws)
    steps = []
    if w.latest("synth") is None:
        t = time.perf_counter()
        run(ws, "synth", ws / "data", "--preset", args.preset, "--seed", args.seed)
        steps.append(("synth", time.perf_counter() - t))
    if w.latest("train") is None:
        t = time.perf_counter()
        run(ws, "train", "--backbone", "convnet", "--size", args.size, "--epochs", args.epochs,
            "--lr", args.lr, "--patience", 0, "--ensemble", args.ensemble, "--device", "cpu",
            "--seed", args.seed)
        steps.append(("train", time.perf_counter() - t))
    train = w.latest("train")
    member = TrainRun.from_run(train).member(0)
    if w.latest("index") is None:
        t = time.perf_counter()
        run(ws, "index", w.latest("synth").outputs["pool"], "--model", f"{train.ref}@0",
            "--device", "cpu")
        steps.append(("index", time.perf_counter() - t))
    single = ws / "single-model"
    if not single.exists():
        shutil.copytree(member, single)
    for name, sec in steps:
        print(f"{name}: {sec:.0f} s", flush=True)
    return member, single


def truth_of(ws: Path) -> pd.DataFrame:
    synth = Workspace(ws).latest("synth")
    return pd.read_parquet(synth.outputs["pool_truth"]).set_index("file")


def correct(table: pd.DataFrame, truth: pd.DataFrame) -> np.ndarray:
    t = truth.loc[table["key"]]
    return t["expression"].to_numpy() == table["expression"].to_numpy()


def at_equal_counts(table: pd.DataFrame, right: np.ndarray, shares: list[float]) -> list[dict]:
    """Precision of the N least uncertain vs the N best scored faces, per share."""
    unc = table["epistemic"].to_numpy(np.float64)
    score = table["score"].to_numpy(np.float64)
    rows = []
    for share in shares:
        n = int(round(share * len(table)))
        by_unc = np.argsort(unc, kind="stable")[:n]
        by_score = np.argsort(-score, kind="stable")[:n]
        both = np.intersect1d(by_unc, by_score)
        rows.append({"share": share, "kept": n,
                     "cut": float(unc[by_unc].max()) if n else None,
                     "precision_uncertainty": float(right[by_unc].mean()) if n else None,
                     "precision_score": float(right[by_score].mean()) if n else None,
                     "overlap": len(both)})
    return rows


def auroc(values: np.ndarray, wrong: np.ndarray) -> float | None:
    """Probability that a wrong face has a higher value than a right one (ties half)."""
    if wrong.all() or not wrong.any():
        return None
    ranks = pd.Series(values).rank().to_numpy()
    n1, n0 = wrong.sum(), (~wrong).sum()
    return float((ranks[wrong].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workspace", default="bench-uncertainty")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--ensemble", type=int, default=3)
    ap.add_argument("--mc-passes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shares", default="0.9,0.8,0.7,0.6,0.5")
    ap.add_argument("--setting", action="append", default=[],
                    help='omnifer mine flags of one mining ("": the defaults); repeatable')
    ap.add_argument("--out", default=None, help="JSON results [WORKSPACE/mine_uncertainty.json]")
    args = ap.parse_args()
    ws = Path(args.workspace).resolve()
    ws.mkdir(parents=True, exist_ok=True)
    shares = [float(s) for s in args.shares.split(",")]
    start = time.perf_counter()
    member, single = prepare(ws, args)
    truth = truth_of(ws)
    results = []
    for setting in args.setting or [""]:
        flags = [*shlex.split(setting), "--device", "cpu"]
        t = time.perf_counter()
        plain = run(ws, "mine", *flags)
        base = pd.read_parquet(plain["dataset"])
        base_right = correct(base, truth)
        print(f"mine {setting or '(defaults)'}: {len(base)} faces, precision "
              f"{base_right.mean() if len(base) else float('nan'):.4f} "
              f"({time.perf_counter() - t:.0f} s)", flush=True)
        if len(base) < 10:
            print("  too few faces to compare; loosen the setting", flush=True)
            continue
        for name, extra in (("whole run", []),
                            ("member 0 alone", ["--model", single, "--mc-passes",
                                                args.mc_passes])):
            t = time.perf_counter()
            r = run(ws, "mine", *flags, *extra, "--max-uncertainty", 1)
            table = pd.read_parquet(r["dataset"])
            assert list(table["key"]) == list(base["key"]), "a different mined set"
            right = correct(table, truth)
            rows = at_equal_counts(table, right, shares)
            check = None
            if name == "whole run" and rows and rows[0]["cut"] is not None:
                cut = run(ws, "mine", *flags, "--max-uncertainty", rows[0]["cut"])
                kept = pd.read_parquet(cut["dataset"])
                check = {"cut": rows[0]["cut"], "mined": len(kept),
                         "precision": float(correct(kept, truth).mean()) if len(kept) else None,
                         "dropped_per_class": cut["uncertainty"]["dropped_per_class"]}
            unc = table["epistemic"].to_numpy(np.float64)
            results.append({
                "setting": setting or "(defaults)", "scoring": name,
                "scored_with": r["uncertainty"]["scored_with"], "mined": len(table),
                "precision_all": float(right.mean()), "seconds": time.perf_counter() - t,
                "epistemic": {"mean": float(unc.mean()), "median": float(np.median(unc)),
                              "max": float(unc.max())},
                "auroc_wrong_uncertainty": auroc(unc, ~right),
                "auroc_wrong_low_score": auroc(-table["score"].to_numpy(np.float64), ~right),
                "rows": rows, "filter_check": check})
            print(json.dumps(results[-1]), flush=True)
    out = Path(args.out or ws / "mine_uncertainty.json")
    out.write_text(json.dumps(results, indent=2))
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    print(f"\n```\npython {' '.join(map(shlex.quote, sys.argv))}\n```\n")
    print(f"CPU: {cpu}; total {time.perf_counter() - start:.0f} s\n")
    print("| mining | scoring | mined | precision (all) | kept | (a) drop most uncertain | "
          "(b) drop lowest score | overlap of (a) and (b) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        for row in r["rows"]:
            print(f"| {r['setting']} | {r['scoring']} | {r['mined']} | {r['precision_all']:.4f} "
                  f"| {row['kept']} ({row['share']:.0%}) | {row['precision_uncertainty']:.4f} | "
                  f"{row['precision_score']:.4f} | {row['overlap']} |")
    print("\n| mining | scoring | how | AUROC of wrong faces: uncertainty | AUROC: low score | "
          "epistemic mean / max | filter check (cut: mined, precision) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        c = r["filter_check"]
        check = "-" if c is None else f"{c['cut']:.4g}: {c['mined']}, {c['precision']:.4f}"
        fmt = (lambda v: "-" if v is None else f"{v:.3f}")
        print(f"| {r['setting']} | {r['scoring']} | {r['scored_with']} | "
              f"{fmt(r['auroc_wrong_uncertainty'])} | {fmt(r['auroc_wrong_low_score'])} | "
              f"{r['epistemic']['mean']:.4f} / {r['epistemic']['max']:.4f} | {check} |")


if __name__ == "__main__":
    main()
