"""Generations of deep ensembles on the synthetic benchmark, and calibration baselines.

For each seed: ``omnifer synth`` (the given preset), then one train run with ``--generations
G --ensemble K`` (generation 0 on ground truth, each later generation also on the previous
generation's mean soft labels). On the test set it evaluates every generation's ensemble
(``RUN@gN``), each generation's members alone (``RUN@gN.k``, mean over members), and for
generation 0 the calibration baselines: one member before and after temperature scaling,
one member with Monte-Carlo dropout, and the ensemble. Results go to ``--out`` as JSON after
every seed, with a Markdown table.

    python bench/generations.py --preset small --seeds 0 1 2 --out bench-runs/generations.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from omnifer import pipeline
from omnifer.artifacts import atomic_write_json
from omnifer.synth import generate
from omnifer.train import TrainConfig
from omnifer.train.config import EvaluateConfig

KEYS = (("macro-F1", "expression", "macro_f1"), ("mean CCC", "va", "ccc_mean"),
        ("ECE", "expression", "ece_after"), ("NLL", "expression", "nll_after"),
        ("Brier", "expression", "brier_after"), ("ECE raw", "expression", "ece_before"),
        ("NLL raw", "expression", "nll_before"))


def metrics(results: dict, raw: bool = False) -> dict[str, float]:
    out = {name: results[task][key] for name, task, key in KEYS if task in results}
    out["error AUROC"] = results["expression"]["error_auroc"]
    out["epistemic"] = results["uncertainty"]["expression_epistemic"]
    return out


def one_seed(args: argparse.Namespace, seed: int) -> dict:
    ws = Path(args.work) / f"seed{seed}"
    data = generate(ws / "data", preset=args.preset, seed=seed)
    config = TrainConfig(backbone=args.backbone, input_size=args.size, epochs=args.epochs,
                         lr=args.lr, ensemble=args.ensemble, generations=args.generations,
                         seed=seed, device=args.device)
    t0 = time.perf_counter()
    run = pipeline.train(ws, config, data=data.labeled_toml)
    train_s = time.perf_counter() - t0

    def evaluate(ref: str, **kw) -> dict:
        return pipeline.evaluate(ws, EvaluateConfig(device=args.device, **kw), model=ref,
                                 data=data.test_toml).results

    out: dict = {"seed": seed, "train_seconds": train_s, "generations": [], "baselines": {}}
    for g in range(args.generations):
        members = [metrics(evaluate(f"{run.ref}@g{g}.{k}")) for k in range(args.ensemble)]
        out["generations"].append({
            "ensemble": metrics(evaluate(f"{run.ref}@g{g}")),
            "member_mean": {k: statistics.mean(m[k] for m in members) for k in members[0]}})
    single = evaluate(f"{run.ref}@g0.0")
    mc = evaluate(f"{run.ref}@g0.0", mc_dropout=args.mc_passes, mc_rate=args.mc_rate)
    ens = evaluate(f"{run.ref}@g0")
    e = "expression"
    out["baselines"] = {
        "single, no scaling": {"ECE": single[e]["ece_before"], "NLL": single[e]["nll_before"]},
        "single + temperature scaling": {"ECE": single[e]["ece_after"],
                                         "NLL": single[e]["nll_after"]},
        f"single + MC dropout ({args.mc_passes} passes, p={args.mc_rate})":
            {"ECE": mc[e]["ece_before"], "NLL": mc[e]["nll_before"]},
        f"ensemble of {args.ensemble}, no scaling": {"ECE": ens[e]["ece_before"],
                                                     "NLL": ens[e]["nll_before"]},
        f"ensemble of {args.ensemble} + temperature scaling": {"ECE": ens[e]["ece_after"],
                                                               "NLL": ens[e]["nll_after"]},
    }
    return out


def cell(values: list[float]) -> str:
    """A table cell: the mean ± the standard deviation over seeds (the value for one seed)."""
    return (f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"
            if len(values) > 1 else f"{values[0]:.3f}")


def table(results: list[dict]) -> str:
    names = ["macro-F1", "mean CCC", "ECE", "NLL", "Brier", "error AUROC", "epistemic"]
    lines = ["| generation | model | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    for g in range(len(results[0]["generations"])):
        for arm in ("ensemble", "member_mean"):
            rows = [r["generations"][g][arm] for r in results]
            lines.append(f"| {g} | {arm.replace('_', ' ')} | " + " | ".join(
                cell([r[n] for r in rows]) for n in names) + " |")
    lines += ["", "| generation 0 | ECE | NLL |", "|---|---|---|"]
    for name in results[0]["baselines"]:
        rows = [r["baselines"][name] for r in results]
        lines.append(f"| {name} | {cell([r['ECE'] for r in rows])} | "
                     f"{cell([r['NLL'] for r in rows])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--generations", type=int, default=3)
    ap.add_argument("--ensemble", type=int, default=3)
    ap.add_argument("--backbone", default="convnet")
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--mc-passes", type=int, default=20)
    ap.add_argument("--mc-rate", type=float, default=0.3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--work", default="bench-runs/generations")
    ap.add_argument("--out", default="bench-runs/generations.json")
    args = ap.parse_args()
    results = []
    for seed in args.seeds:
        results.append(one_seed(args, seed))
        atomic_write_json(Path(args.out), {"args": vars(args), "seeds": results})
        print(json.dumps(results[-1]["generations"][-1], indent=1), flush=True)
    print(table(results))


if __name__ == "__main__":
    main()
