"""Structural vs output vs both distillation on the synthetic benchmark, several seeds.

For each seed: ``omnifer synth`` (the given preset; an existing ``--work`` folder is reused),
a teacher (``--teacher-backbone`` at ``--teacher-size``; a finished one in ``--work`` is
reused), then students at ``--size`` that differ only in what they learn from: ``none``
(ground truth only), ``output`` (soft labels), ``structural`` (the Sinkhorn divergence of
batch similarity rows), ``output,structural``. Each is evaluated on the test set; the table
gives the mean and standard deviation over seeds.

    python bench/structural_kd.py --preset small --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from generations import cell  # noqa: E402  (bench/ is the script's folder)

from omnifer import pipeline
from omnifer.artifacts import atomic_write_json
from omnifer.synth import generate
from omnifer.train import TrainConfig
from omnifer.train.config import EvaluateConfig

#: students: ground truth only, and the three distillations (``--kd``)
ARMS = ("none", "output", "structural", "output,structural")


def one_seed(args: argparse.Namespace, seed: int) -> dict:
    ws = Path(args.work) / f"seed{seed}"
    data = generate(ws / "data", preset=args.preset, seed=seed)
    common = dict(epochs=args.epochs, lr=args.lr, seed=seed, device=args.device)
    tconfig = TrainConfig(backbone=args.teacher_backbone, input_size=args.teacher_size,
                          **{**common, "epochs": args.teacher_epochs})
    teacher = _finished(ws, tconfig) or pipeline.train(ws, tconfig, data=data.labeled_toml)

    def test(ref: str) -> dict:
        r = pipeline.evaluate(ws, EvaluateConfig(device=args.device), model=ref,
                              data=data.test_toml).results
        return {"macro-F1": r["expression"]["macro_f1"], "mean CCC": r["va"]["ccc_mean"]}

    out = {"seed": seed, "teacher": test(teacher.ref)}
    for arm in args.arms:
        config = TrainConfig(backbone=args.backbone, input_size=args.size,
                             kd="output" if arm == "none" else arm,
                             structural_weight=args.structural_weight, **common)
        student = pipeline.train(ws, config, data=data.labeled_toml,
                                 **({} if arm == "none" else
                                    {"teacher": teacher.ref, "student": True}))
        out[arm] = {**test(student.ref), "train_seconds": student.train_seconds}
    return out


def _finished(ws: Path, config: TrainConfig) -> object | None:
    """A complete teacher run of ``config`` in ``ws`` (an earlier invocation's), or None."""
    import dataclasses

    from omnifer.records import TrainRun
    from omnifer.workspace import Workspace

    want = dataclasses.asdict(config)
    found = Workspace(ws).latest("train", where=lambda r: r.status == "complete" and (
        r.manifest.get("config") or {}).get("train") == json.loads(json.dumps(want)) and
        not r.manifest["config"].get("teacher"))
    return TrainRun.from_run(found) if found else None


def table(results: list[dict], arms: list[str]) -> str:
    lines = ["| model | macro-F1 | mean CCC | training s |", "|---|---|---|---|"]
    for arm in ("teacher", *arms):
        rows = [r[arm] for r in results]
        secs = cell([r["train_seconds"] for r in rows]) if "train_seconds" in rows[0] else "-"
        lines.append(f"| {arm} | {cell([r['macro-F1'] for r in rows])} | "
                     f"{cell([r['mean CCC'] for r in rows])} | {secs} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--teacher-backbone", default="convnet")
    ap.add_argument("--teacher-size", type=int, default=64)
    ap.add_argument("--teacher-epochs", type=int, default=15)
    ap.add_argument("--backbone", default="convnet")
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    ap.add_argument("--structural-weight", type=float,
                    default=TrainConfig.structural_weight)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--work", default="bench-runs/structural_kd")
    ap.add_argument("--out", default="bench-runs/structural_kd.json")
    args = ap.parse_args()
    results = []
    for seed in args.seeds:
        results.append(one_seed(args, seed))
        atomic_write_json(Path(args.out), {"args": vars(args), "seeds": results})
        print(table(results[-1:], args.arms), flush=True)
    print(table(results, args.arms))


if __name__ == "__main__":
    main()
