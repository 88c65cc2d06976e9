"""Mining quality on the synthetic benchmark: precision against the hidden pool truth, coverage,
distractors mined, and the ``--target-precision`` estimate against the true precision.

Needs a workspace where synth, train and index ran (``make demo`` makes one in ``demo/``). Each
setting runs ``omnifer mine`` in that workspace and joins the mined set with
``pool_truth.parquet`` by pool key:

- precision: mined faces whose label is the true expression (non-faces count as wrong);
- coverage: mined faces among the pool faces that have an expression (faces, blends, occluded);
- distractors: non-faces and occluded faces mined, and their share of the mined set.

    python bench/mine_synth.py --workspace demo --thresholds 0.8,0.85,0.9,0.95 \\
        --target-precision 0.9,0.95
    python bench/mine_synth.py --workspace demo --thresholds "" --target-precision "" \\
        --setting "" --setting "--target-precision 0.9" --setting "--threshold -1"

``--setting`` runs ``omnifer mine`` with exactly those flags (plus ``--extra``); "" is the
default run. Per-class true precision and counts are reported too.

``--ood`` also measures how well each out-of-distribution score of mining tells the pool's
non-faces and heavily occluded faces from its clear faces (AUROC over the whole pool, the
low-scoring faces as positives): the k-th labeled neighbour's cosine, the feature norm and the
weakest activation region of the occlusion check.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from omnifer.cli.main import main as omnifer
from omnifer.workspace import Workspace


def run_mine(ws: Path, args: list[str]) -> dict:
    from contextlib import redirect_stdout
    from io import StringIO

    buf = StringIO()
    with redirect_stdout(buf):
        try:
            omnifer(["-q", "--json", "-w", str(ws), "mine", *args])
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise
    return json.loads(buf.getvalue())


def score(result: dict, truth: pd.DataFrame) -> dict:
    mined = pd.read_parquet(result["dataset"], columns=["key", "expression"])
    t = truth.set_index("file").loc[mined["key"]]
    right = (t["expression"].to_numpy() == mined["expression"].to_numpy())
    labelled = truth["expression"].notna().sum()
    distract = t["kind"].isin(["nonface", "occluded"]).to_numpy()
    kinds = t["kind"].value_counts().to_dict()
    return {"mined": len(mined), "precision": float(right.mean()) if len(mined) else None,
            "coverage": float(right.size / labelled), "distractors": int(distract.sum()),
            "distractor_rate": float(distract.mean()) if len(mined) else 0.0,
            "nonface": kinds.get("nonface", 0), "occluded": kinds.get("occluded", 0),
            "blend": kinds.get("blend", 0),
            "precision_clear_faces": float(right[t["kind"].to_numpy() == "face"].mean())
            if (t["kind"] == "face").any() else None,
            "estimate": result["estimate"]["precision"],
            "estimate_coverage": result["estimate"]["coverage"],
            "per_class": {name: {"mined": int(sel.sum()),
                                 "precision": float(right[sel].mean()) if sel.any() else None}
                          for name, sel in ((n, (mined["expression"] == i).to_numpy())
                                            for i, n in enumerate(
                                                c["class"] for c in result["thresholds"]))}}


def ood_separation(ws: Path, truth: pd.DataFrame, k: int = 10) -> dict[str, dict[str, float]]:
    """AUROC of each out-of-distribution score of mining (low = out), non-faces and heavily
    occluded faces each against the pool's clear faces."""
    import numpy as np

    from omnifer import metrics
    from omnifer.mining.engine import evidence
    from omnifer.pipeline import resolve
    from omnifer.pipeline.embeddings import labeled_features
    from omnifer.pools.index import feature_norms, load_index_outputs

    w = resolve.workspace(ws)
    index = resolve.run(w, None, "index")
    pool, ids = load_index_outputs(index.embeddings, index.ids)
    data = resolve.read_data(w, resolve.synth_output(w, None, "labeled", "--labeled"))
    data = data.subset(data.masks()["expression"])
    labeled, labeled_norms = labeled_features(w, data, index.model, "cpu")
    labels = data.table["expression"].to_numpy(np.int64)
    ev = evidence(pool, labeled, labels, len(data.expressions), k=k, floor=-1.0)
    kth = np.full(len(pool), np.nan)
    kth[ev.rows] = ev.neighbour_scores[:, -1]
    scores = {"k-th neighbour cosine": kth, "feature norm": feature_norms(ids),
              "weakest activation region": weakest_regions(w, index, ids, data)}
    kind = truth.set_index("file").loc[ids["key"], "kind"].to_numpy()
    out = {}
    for name, value in scores.items():
        out[name] = {}
        for what in ("nonface", "occluded"):
            sel = np.isin(kind, ["face", what])
            out[name][what] = metrics.auroc(-value[sel], kind[sel] == what)
    return out


def weakest_regions(w: Any, index: Any, ids: pd.DataFrame, data: Any) -> Any:
    """The occlusion check's score (``omnifer.mining.occlusion``) of every pool face."""
    from omnifer.mining.occlusion import reference_map, weakest_region
    from omnifer.pipeline.embeddings import labeled_maps
    from omnifer.pipeline.mine import pool_maps
    from omnifer.pools import open_pool

    src = open_pool(index.pool, index.source, **index.source_options)
    maps = pool_maps(index.model, src, ids, detected=index.detect is not None, device="cpu")
    return weakest_region(maps, reference_map(labeled_maps(w, data, index.model, "cpu")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workspace", default="demo")
    ap.add_argument("--thresholds", default="0.8,0.85,0.9,0.95")
    ap.add_argument("--target-precision", default="0.9,0.95")
    ap.add_argument("--setting", action="append", default=[],
                    help="a run with exactly these flags (\"\" : the default run); repeatable")
    ap.add_argument("--extra", default="", help="more omnifer mine flags, e.g. '--k 20'")
    ap.add_argument("--out", default=None, help="JSON results [WORKSPACE/mine_synth.json]")
    ap.add_argument("--ood", action="store_true",
                    help="AUROC of the out-of-distribution scores against the pool's truth")
    args = ap.parse_args()
    ws = Path(args.workspace)
    synth = Workspace(ws).latest("synth")
    truth = pd.read_parquet(synth.outputs["pool_truth"])
    extra = shlex.split(args.extra)
    if args.ood:
        print("| score | non-faces against clear faces | heavily occluded against clear faces |")
        print("|---|---|---|")
        for name, auc in ood_separation(ws, truth).items():
            print(f"| {name} | {auc['nonface']:.3f} | {auc['occluded']:.3f} |")
    rows = []
    for flags in args.setting:
        r = run_mine(ws, [*shlex.split(flags), *extra])
        rows.append({"setting": flags or "(defaults)", **score(r, truth)})
        print(rows[-1], flush=True)
    for t in filter(None, args.thresholds.split(",")):
        rows.append({"setting": f"--threshold {t}", **score(run_mine(ws, ["--threshold", t, *extra]), truth)})
        print(rows[-1], flush=True)
    for p in filter(None, args.target_precision.split(",")):
        r = run_mine(ws, ["--target-precision", p, *extra])
        rows.append({"setting": f"--target-precision {p}", **score(r, truth),
                     "thresholds": {c["class"]: c["threshold"] for c in r["thresholds"]}})
        print(rows[-1], flush=True)
    out = Path(args.out or ws / "mine_synth.json")
    out.write_text(json.dumps(rows, indent=2))
    print(f"\n```\npython {' '.join(map(shlex.quote, sys.argv))}\n```\n")
    print("| setting | mined | precision (true) | held-out estimate | precision on clear faces | "
          "coverage | distractors (rate) | non-faces | occluded | blends |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        est = "-" if r["estimate"] is None else f"{r['estimate']:.3f}"
        prec = "-" if r["precision"] is None else f"{r['precision']:.3f}"
        clear = "-" if r["precision_clear_faces"] is None else f"{r['precision_clear_faces']:.3f}"
        print(f"| {r['setting']} | {r['mined']} | {prec} | {est} | {clear} | {r['coverage']:.3f} | "
              f"{r['distractors']} ({r['distractor_rate']:.2%}) | {r['nonface']} | "
              f"{r['occluded']} | {r['blend']} |")
    print("\n| setting | " + " | ".join(rows[0]["per_class"]) + " |" if rows else "")
    for r in rows:
        print(f"| {r['setting']} | " + " | ".join(
            f"{v['mined']} @ {v['precision']:.3f}" if v["precision"] is not None else "0"
            for v in r["per_class"].values()) + " |")


if __name__ == "__main__":
    main()
