"""Teacher vs student on the synthetic benchmark, several seeds.

For each seed: a teacher learns from the labeled databases' partial labels (ground truth
only); a student of the same architecture learns from ground truth and the teacher's soft
labels on every task of every sample. Both are evaluated on the test set (all labels, held-out
identities). Results go to ``--out`` as JSON after every model, so a rerun continues.

    omnifer synth demo/data        # the default preset
    python bench/teacher_student.py --data demo/data/labeled.toml --test demo/data/test.toml
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from omnifer.artifacts import atomic_write_json
from omnifer.data import read_labeled
from omnifer.train import TrainConfig, evaluate_models, load_models, train
from omnifer.train.images import decoded_images

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
    args = ap.parse_args()

    labeled, test = read_labeled(args.data), read_labeled(args.test)
    work, out = Path(args.work), Path(args.out)
    cache = work / "cache"
    results = json.loads(out.read_text()) if out.is_file() else {}
    test_images = decoded_images(test, args.size, cache)
    for seed in args.seeds:
        config = TrainConfig(backbone=args.backbone, input_size=args.size, epochs=args.epochs,
                             lr=args.lr, seed=seed, patience=0)
        for role in ("teacher", "student"):
            key = f"{role}/{seed}"
            if key in results:
                continue
            teachers = load_models(work / f"teacher-{seed}") if role == "student" else ()
            t0 = time.perf_counter()
            train(labeled, work / f"{role}-{seed}", config=config, cache_dir=cache,
                  teachers=teachers)
            seconds = time.perf_counter() - t0
            models = load_models(work / f"{role}-{seed}")
            r = evaluate_models(models, test, test_images, work / f"{role}-{seed}" / "test",
                                device=torch.device("cpu"))
            results[key] = {name: r[t][k] for name, (t, k) in METRICS.items() if t in r}
            results[key]["train_seconds"] = seconds
            atomic_write_json(out, results)
            print(key, json.dumps({k: round(v, 4) for k, v in results[key].items()}), flush=True)

    print(f"\n{len(args.seeds)} seeds, {args.backbone} @ {args.size}px, {args.epochs} epochs; "
          "test set, mean +- std")
    print(f"{'metric':<24}{'teacher':>18}{'student':>18}{'student higher':>16}")
    for name in [*METRICS, "train_seconds"]:
        cols, per_seed = [], []
        for role in ("teacher", "student"):
            vals = [results[f"{role}/{s}"][name] for s in args.seeds
                    if name in results.get(f"{role}/{s}", {})]
            per_seed.append(vals)
            cols.append(f"{statistics.mean(vals):.4f} +- {(statistics.stdev(vals) if len(vals) > 1 else 0.0):.4f}"
                        if vals else "-")
        wins = sum(s > t for t, s in zip(*per_seed))
        print(f"{name:<24}{cols[0]:>18}{cols[1]:>18}{wins:>12}/{len(per_seed[0])}")


if __name__ == "__main__":
    main()
