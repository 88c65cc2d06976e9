"""Does a distilled set keep the mined set's gain at a fraction of its training cost?

On a workspace whose mined set is several times the labeled expression count (the ``scale``
synth preset), students of the primitive model (the model that mined the set) learn with one
recipe on the labeled data plus each arm:

    labeled       nothing more
    mined         the whole mined set
    mined-sS      the whole mined set at share S of the draws (``--mined-share``), as a small arm
    rded-N        ``omnifer distill --images-per-class N`` (the default method)
    rded-N-fF     the same with ``--factor F`` (``--factors``; F x F real views per image)
    rded-N-vV     the same with ``--views V`` (``--views``; views scored per real image)
    rded-N-spread the same with ``--select spread`` (``--select``; views spread over the scores)
    rded-N-cC     the same with ``--candidates C`` (``--candidates``; C random images per class
                  scored)
    dm-N          the same with ``--method dm`` (``--dm-ipc``; learned pixels)
    sre2l-N       the same with ``--method sre2l`` (``--sre2l-ipc``; pixels recovered from the
                  primitive model's batch-norm statistics)
    random-N      N random mined faces per class
    herding-N     N mined faces per class picked by herding on the primitive model's embeddings
    ARM+relabel   an arm trained with ``--relabel`` on its source (``--relabel``)

With ``--with-labeled`` the small arms draw from the mined set plus the labeled faces (``omnifer
distill --with-labeled``), which covers the classes the mined set lacks.

The small arms get ``--share`` of the draws of an epoch on top of the labeled faces' draws
(``--source-share``), as a user would train with them. Each student is evaluated on the test
set; the table gives macro-F1, mean CCC and training seconds (mean +- std over seeds), draws
per epoch, the share of the mined arm's macro-F1 gain each arm keeps and its extra training
time as a share of the mined arm's. Results go to ``--out`` after every model; a rerun
continues. ``--epochs``, ``--patience`` and ``--val-from`` set the recipe (``--patience 0``:
every student trains all its epochs and keeps its best checkpoint on validation).

    omnifer -w scale synth scale/data --preset scale
    omnifer -w scale train --backbone convnet --size 64 --epochs 30 --lr 2e-3
    omnifer -w scale index scale/data/pool && omnifer -w scale mine --threshold 0.9
    python bench/distill_scale.py --workspace scale            # --dm-ipc with no value: no dm arm
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from omnifer import host, pipeline
from omnifer.pipeline import resolve
from omnifer.pipeline.distill import source_data
from omnifer.artifacts import atomic_write_json
from omnifer.data import LabeledSet
from omnifer.distill import DistillConfig, select_coreset
from omnifer.pipeline.embeddings import labeled_embeddings
from omnifer.train import TrainConfig
from omnifer.train.config import VAL_FROM
from omnifer.workspace import Workspace


def subset(faces: LabeledSet, emb: np.ndarray, rule: str, ipc: int, name: str,
           out: Path) -> Path:
    """``ipc`` faces per class (all of a smaller class) chosen by ``rule``, saved as a source
    called ``name``."""
    y = faces.table["expression"].to_numpy(np.int64)
    rows = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        pick = select_coreset(rule, emb[idx].astype(np.float32), np.zeros(len(idx), np.int64),
                              min(ipc, len(idx)), seed=0)
        rows.append(idx[pick])
    part = faces.subset(np.sort(np.concatenate(rows)))
    table = part.table.assign(source=name)
    LabeledSet(table=table, expressions=part.expressions, aus=part.aus,
               sources=(name,)).save(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workspace", default="scale")
    ap.add_argument("--mine", default=None, help="mine run [the latest]")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ipc", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--dm-ipc", type=int, nargs="*", default=[10],
                    help="images per class of the dm arms (none: no dm arm)")
    ap.add_argument("--sre2l-ipc", type=int, nargs="*", default=[],
                    help="images per class of sre2l arms [none]")
    ap.add_argument("--factors", type=int, nargs="+", default=[1],
                    help="rded --factor values (arms rded-N-fF for F > 1)")
    ap.add_argument("--views", type=int, nargs="+", default=[DistillConfig.views],
                    help="rded --views values (arms rded-N-vV for V other than the default)")
    ap.add_argument("--select", nargs="+", default=[DistillConfig.select],
                    help="rded --select values (arms rded-N-SELECT for the non-default ones)")
    ap.add_argument("--candidates", type=int, nargs="+", default=[DistillConfig.candidates],
                    help="rded: random images per class scored (0: all)")
    ap.add_argument("--with-labeled", action="store_true",
                    help="the small arms come from the mined set plus the labeled faces")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--patience", type=int, default=TrainConfig.patience,
                    help="epochs without validation gain before a student stops (0: never)")
    ap.add_argument("--val-from", choices=VAL_FROM, default=TrainConfig.val_from,
                    help="omnifer train --val-from: validation rows from every source or only "
                         "the labeled data's")
    ap.add_argument("--share", type=float, default=0.2,
                    help="share of an epoch's draws given to a small arm")
    ap.add_argument("--mined-share", type=float, nargs="*", default=[],
                    help="also train the whole mined set at these shares (arms mined-sS)")
    ap.add_argument("--relabel", action="store_true",
                    help="also train every arm but labeled with --relabel on its source "
                         "(arms named ARM+relabel)")
    ap.add_argument("--only", nargs="+", default=None, metavar="ARM",
                    help="train only these arms and make only their sets (the table shows "
                         "every arm done)")
    ap.add_argument("--out", default=None, help="[WORKSPACE/distill_scale.json]")
    ap.add_argument("--report", action="store_true", help="only print the table of what is done")
    args = ap.parse_args()
    ws = Workspace(args.workspace)
    out = Path(args.out or ws.root / "distill_scale.json")
    results = json.loads(out.read_text()) if out.is_file() else {}
    mine = resolve.run(ws, args.mine, "mine")
    model = ws.locate(mine.run.config["model"])
    mined = LabeledSet.load(mine.dataset)
    labeled_n = int(resolve.read_data(
        ws, resolve.synth_output(ws, None, "labeled")).masks()["expression"].sum())
    results["sizes"] = {"labeled_expression": labeled_n, "mined": len(mined)}
    machine = host.describe()  # stored with every entry: float results differ between CPUs

    arms: dict[str, tuple[str | None, str | None]] = {"labeled": (None, None),
                                                       "mined": (str(mine.dataset), None)}
    folder = ws.root / "distill_scale"
    folder.mkdir(exist_ok=True)
    small = source_data(ws, mine, args.with_labeled, None)[0]  # what the small arms draw from
    emb = labeled_embeddings(ws, small, model, "auto", what="embedding the small arms' source")
    d = DistillConfig
    todo = [("rded", ipc, f, v, sel, cand) for ipc in args.ipc for f in args.factors
            for v in args.views for sel in args.select for cand in args.candidates]
    todo += [("dm", ipc, 1, d.views, d.select, d.candidates) for ipc in args.dm_ipc]
    todo += [("sre2l", ipc, 1, d.views, d.select, d.candidates) for ipc in args.sre2l_ipc]
    for method, ipc, factor, views, select, cand in todo:
        key = (f"{method}-{ipc}" + (f"-f{factor}" if factor > 1 else "")
               + (f"-v{views}" if views != d.views else "")
               + (f"-{select}" if select != d.select else "")
               + (f"-c{cand}" if cand != d.candidates else ""))
        if key not in results.get("distill", {}):
            if args.only and key not in {a.removesuffix("+relabel") for a in args.only}:
                continue  # not asked for and not made yet
            t0 = time.perf_counter()
            options = ({"factor": factor, "views": views, "select": select,
                        "candidates": cand} if method == "rded" else {})
            rec = pipeline.distill(ws, DistillConfig(images_per_class=ipc, method=method,
                                                     with_labeled=args.with_labeled,
                                                     **options), source=mine)
            results.setdefault("distill", {})[key] = {
                "run": rec.ref, "seconds": time.perf_counter() - t0,
                "agreement": rec.agreement, "filled": rec.filled, "cpu": machine}
            atomic_write_json(out, results)
        run = ws.resolve(results["distill"][key]["run"], "distill")
        arms[key] = (str(run.path / "distilled.parquet"), "distilled")
    tag = "-with-labeled" if args.with_labeled else ""
    for ipc in args.ipc:
        for rule in ("random", "herding"):
            name = f"{rule}-{ipc}"
            arms[name] = (str(subset(small, emb, rule, ipc, rule,
                                     folder / f"{name}{tag}.parquet")), rule)
    shares = {f"mined-s{s:g}": s for s in args.mined_share}  # the mined set as a small arm
    arms.update({name: (str(mine.dataset), "mined") for name in shares})
    if args.relabel:
        arms.update({f"{name}+relabel": (extra, source or "mined")
                     for name, (extra, source) in list(arms.items()) if extra})
    atomic_write_json(out, results)

    if args.report:
        report(results, list(arms), args.seeds)
        return
    for seed in args.seeds:
        for name, (extra, source) in arms.items():
            key = f"{name}/{seed}"
            if key in results or (args.only and name not in args.only):
                continue
            relabel = (source,) if name.endswith("+relabel") else ()
            at = shares.get(name, args.share if source and source != "mined" else None)
            share = ((source, at),) if at is not None else ()
            config = TrainConfig(backbone="convnet", input_size=64, epochs=args.epochs, lr=2e-3,
                                 patience=args.patience, seed=seed, source_share=share,
                                 relabel=relabel, val_from=args.val_from)
            run = pipeline.train(ws, config, extra=[extra] if extra else [], student=True,
                                 teacher=model, resume=False)
            ev = pipeline.evaluate(ws, model=run.ref)
            m = json.loads((ev.path / "metrics.json").read_text())
            results[key] = {"run": run.ref, "seconds": run.train_seconds,
                            "draws": run.counts["draws_per_epoch"],
                            "epochs": len(json.loads((Path(run.members[0]).parent
                                                      / "history.json").read_text())),
                            "macro_f1": m["expression"]["macro_f1"],
                            "ccc_mean": m["va"]["ccc_mean"], "cpu": machine}
            atomic_write_json(out, results)
            print(key, results[key], flush=True)
    report(results, list(arms), args.seeds)


def report(results: dict, arms: list[str], seeds: list[int]) -> None:
    """The Markdown table of the arms (mean +- std over the seeds there are)."""
    def of(name: str, what: str) -> list[float]:
        return [results[f"{name}/{s}"][what] for s in seeds if f"{name}/{s}" in results]

    def mean_sd(v: list[float], fmt: str = ".4f") -> str:
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        return f"{statistics.mean(v):{fmt}} +- {sd:{fmt}}"

    base_f1, mined_f1 = statistics.mean(of("labeled", "macro_f1")), None
    base_t = statistics.mean(of("labeled", "seconds"))
    base_d = of("labeled", "draws")[0]
    if of("mined", "macro_f1"):
        mined_f1 = statistics.mean(of("mined", "macro_f1"))
        mined_t = statistics.mean(of("mined", "seconds"))
        mined_d = of("mined", "draws")[0]
    print(f"\nlabeled expression faces {results['sizes']['labeled_expression']}, "
          f"mined {results['sizes']['mined']}")
    print("| arm | macro-F1 | mean CCC | training s | draws per epoch | of the mined gain "
          "| extra time, of the mined arm's | extra draws, of the mined arm's | seeds |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for name in arms:
        f1 = of(name, "macro_f1")
        if not f1:
            continue
        gain = extra = draws = "-"
        if mined_f1 is not None and name not in ("labeled", "mined"):
            gain = f"{(statistics.mean(f1) - base_f1) / (mined_f1 - base_f1):.0%}"
            extra = f"{(statistics.mean(of(name, 'seconds')) - base_t) / (mined_t - base_t):.0%}"
            draws = f"{(of(name, 'draws')[0] - base_d) / (mined_d - base_d):.0%}"
        print(f"| {name} | {mean_sd(f1)} | {mean_sd(of(name, 'ccc_mean'))} | "
              f"{mean_sd(of(name, 'seconds'), '.0f')} | {of(name, 'draws')[0]:,} | {gain} | "
              f"{extra} | {draws} | {len(f1)} |")
    for key, d in results.get("distill", {}).items():
        print(f"{key}: {d['run']}, {d['seconds']:.0f} s, model agreement {d['agreement']:.1%}")

if __name__ == "__main__":
    main()
