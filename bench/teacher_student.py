"""Teacher vs student on the synthetic benchmark, several seeds.

For each seed: a teacher learns from the labeled databases' partial labels (ground truth
only); a student of the same architecture learns from ground truth and the teacher's soft
labels on every task of every sample. With ``--with`` (e.g. a mined set), a third arm,
``student+with``, is a student of the same teacher trained on the labeled data plus those
sources (the teacher's soft labels cover every task of their samples too). All are evaluated on
the test set (all labels, held-out identities). Results go to ``--out`` as JSON after every
model; a rerun continues, and a model already evaluated in ``--work`` is not trained again.

    omnifer synth demo/data        # the default preset
    python bench/teacher_student.py --data demo/data/labeled.toml --test demo/data/test.toml
    python bench/teacher_student.py --data demo/data/labeled.toml --test demo/data/test.toml \
        --with demo/.omnifer/runs/mine/<run>/mined.parquet
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from omnifer.artifacts import atomic_write_json
from omnifer.data import LabeledSet, combine, read_labeled
from omnifer.data.cache import decoded_images
from omnifer.train import TrainConfig, evaluate_models, load_models, train

METRICS = {
    "expression accuracy": ("expression", "accuracy"),
    "expression macro-F1": ("expression", "macro_f1"),
    "ABAW expression score": ("expression", "abaw"),
    "CCC valence": ("va", "ccc_valence"),
    "CCC arousal": ("va", "ccc_arousal"),
    "mean CCC": ("va", "ccc_mean"),
    "AU mean F1": ("au", "f1_mean"),
    "ECE before TS": ("expression", "ece_before"),
    "ECE after TS": ("expression", "ece_after"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--work", default="bench-runs/teacher_student")
    ap.add_argument("--out", default="bench-runs/teacher_student.json")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--backbone", default="convnet")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--with", dest="extra", action="append", default=[],
                    help="a saved sample table (e.g. mined.parquet) for the student+with arm")
    ap.add_argument("--repeat", type=int, default=1,
                    help="draw each --with sample this many times per epoch (oversampling)")
    ap.add_argument("--source-share", default=None,
                    help="student+with: share of draws per source, e.g. distilled=0.3")
    args = ap.parse_args()

    labeled, test = read_labeled(args.data), read_labeled(args.test)
    roles = ["teacher", "student"] + (["student+with"] if args.extra else [])
    data = {"teacher": labeled, "student": labeled, "student+with":
            combine([labeled, *[LabeledSet.load(p) for p in args.extra] * args.repeat])
            if args.extra else None}
    work, out = Path(args.work), Path(args.out)
    cache = work / "cache"
    results = json.loads(out.read_text()) if out.is_file() else {}
    test_images = decoded_images(test, args.size, cache)
    for seed in args.seeds:
        config = TrainConfig(backbone=args.backbone, input_size=args.size, epochs=args.epochs,
                             lr=args.lr, seed=seed, patience=0)
        for role in roles:
            key = f"{role}/{seed}"
            if key in results:
                continue
            run = work / f"{role}-{seed}"
            fresh = not (run / "test" / "metrics.json").is_file()  # else trained earlier
            teachers = load_models(work / f"teacher-{seed}") if role != "teacher" else ()
            t0 = time.perf_counter()
            if fresh:
                share = args.source_share if role == "student+with" else None
                train(data[role], run, config=config.replace(source_share=share),
                      cache_dir=cache, teachers=teachers)
            seconds = time.perf_counter() - t0 if fresh else None
            models = load_models(run)
            r = evaluate_models(models, test, test_images, run / "test",
                                device=torch.device("cpu"))
            results[key] = {name: r[t][k] for name, (t, k) in METRICS.items() if t in r}
            if seconds is not None:
                results[key]["train_seconds"] = seconds
            results[key]["train_samples"] = len(data[role])
            atomic_write_json(out, results)
            print(key, json.dumps({k: round(v, 4) for k, v in results[key].items()}), flush=True)

    print(f"\n{len(args.seeds)} seeds, {args.backbone} @ {args.size}px, {args.epochs} epochs; "
          "test set, mean +- std")
    print(f"| metric | {' | '.join(roles)} | student above teacher | student+with above teacher |")
    print("|---" * (len(roles) + 3) + "|")
    for name in [*METRICS, "train_seconds", "train_samples"]:
        cols, per_seed = [], []
        for role in roles:
            vals = [results[f"{role}/{s}"][name] for s in args.seeds
                    if name in results.get(f"{role}/{s}", {})]
            per_seed.append(vals)
            cols.append(f"{statistics.mean(vals):.4f} +- {(statistics.stdev(vals) if len(vals) > 1 else 0.0):.4f}"
                        if vals else "-")
        wins = [f"{sum(s > t for t, s in zip(per_seed[0], p))}/{len(p)}" for p in per_seed[1:]]
        print(f"| {name} | {' | '.join(cols)} | {' | '.join(wins)} |")


if __name__ == "__main__":
    main()
