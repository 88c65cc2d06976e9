"""Models trained on labeled data alone and on labeled data plus mined sets, several seeds.

Each arm trains a model with the same recipe (``omnifer train``, ground truth and the mined
pseudo-labels; with ``--teacher``, a student of that teacher's soft labels too) on the labeled
set plus the arm's mined set, and evaluates it on the synthetic test set (held-out identities,
all labels). Results go to ``--out`` as JSON after every model; a rerun skips the (arm, seed)
pairs already there.

    python bench/mined_students.py --workspace demo --arm old=mine/<run> --arm new=mine/<run> \\
        --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from omnifer import pipeline
from omnifer.artifacts import atomic_write_json
from omnifer.train import TrainConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workspace", default="demo")
    ap.add_argument("--teacher", default=None, help="a train run to learn soft labels from")
    ap.add_argument("--arm", action="append", default=[], metavar="NAME=RUN",
                    help="a mined set to add to the labeled data; repeatable")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--out", default=None, help="[WORKSPACE/mined_students.json]")
    args = ap.parse_args()
    out = Path(args.out or Path(args.workspace) / "mined_students.json")
    results = json.loads(out.read_text()) if out.is_file() else {}
    arms = {"labeled": []} | {a.split("=", 1)[0]: [a.split("=", 1)[1]] for a in args.arm}
    for seed in args.seeds:
        for name, extra in arms.items():
            key = f"{name}/{seed}"
            if key in results:
                continue
            config = TrainConfig(backbone="convnet", input_size=64, epochs=args.epochs, lr=2e-3,
                                 seed=seed)
            run = pipeline.train(args.workspace, config, extra=extra,
                                 student=args.teacher is not None, teacher=args.teacher,
                                 resume=False)
            ev = pipeline.evaluate(args.workspace, model=run.ref)
            m = json.loads((ev.path / "metrics.json").read_text())
            results[key] = {"run": run.ref, "seconds": run.seconds,
                            "macro_f1": m["expression"]["macro_f1"],
                            "accuracy": m["expression"]["accuracy"],
                            "ccc_mean": m["va"]["ccc_mean"], "au_f1": m["au"]["f1_mean"]}
            atomic_write_json(out, results)
            print(key, results[key], flush=True)
    print("\narm          macro-F1 (mean ± sd)     mean CCC (mean ± sd)    seeds")
    for name in arms:
        rows = [results[f"{name}/{s}"] for s in args.seeds if f"{name}/{s}" in results]
        f1 = [r["macro_f1"] for r in rows]
        ccc = [r["ccc_mean"] for r in rows]
        sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
        print(f"{name:<12} {statistics.mean(f1):.4f} ± {sd(f1):.4f}       "
              f"{statistics.mean(ccc):.4f} ± {sd(ccc):.4f}       {len(rows)}")


if __name__ == "__main__":
    main()
