"""Label-audit quality on the synthetic benchmark with planted label noise: precision and recall
of the flagged labels against the flipped ones, and the duplicate counts.

Needs a workspace where ``omnifer synth --label-noise RATE`` and ``omnifer train`` ran, and
``omnifer audit`` (the latest audit run is read; ``--run`` names another, ``--audit`` runs one
first with the flags given after it). The audit table is joined with the synth run's hidden
``label_noise.parquet`` on ``sample_id``:

- precision: flagged labels that were flipped; recall: flipped labels that were flagged;
- the same split into the faces the model trained on and its validation faces (the train run's
  ``split.json``): a model that memorised the flips would find them only among the latter;
- a sweep of the cut on the run's label-issue score (the table's ``label_score``; a face is
  flagged when its suggested label differs and the score reaches the cut);
- near duplicates across the labeled databases and of test faces, outliers (and how many of
  them carry a flipped label);
- with ``--copies N``: how the duplicate checks separate copies from distinct faces, at the
  model's input size as the audit sees them: the nearest distinct face in another database
  (fewest hash bits, highest cosine) against edited copies of N labeled faces (mirror,
  brightness x1.15, JPEG quality 60, 75% resize, 95% centre crop).

    omnifer -w /tmp/auditws synth /tmp/auditws/data --label-noise 0.1
    omnifer -w /tmp/auditws train --backbone convnet --size 64 --epochs 10 --lr 2e-3
    omnifer -w /tmp/auditws audit
    python bench/audit_synth.py --workspace /tmp/auditws
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import pandas as pd

from omnifer.records import AuditRun, SynthRun
from omnifer.workspace import Workspace

CUTS = {"margin": (0.0, 0.05, 0.1, 0.12, 0.15, 0.17, 0.2, 0.25, 0.3),
        "confidence": (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)}


def prf(flagged: np.ndarray, flipped: np.ndarray) -> dict:
    tp = int((flagged & flipped).sum())
    p = tp / flagged.sum() if flagged.any() else float("nan")
    r = tp / flipped.sum() if flipped.any() else float("nan")
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return {"flagged": int(flagged.sum()), "true_positives": tp, "precision": round(float(p), 4),
            "recall": round(float(r), 4), "f1": round(float(f1), 4)}


def evaluate(ws: Workspace, run: AuditRun) -> dict:
    synth = SynthRun.from_run(ws.latest("synth"))
    if synth.label_noise is None:
        sys.exit(f"synth run {synth.ref} has no label_noise.parquet; run "
                 "`omnifer synth OUT --label-noise 0.1` first")
    truth = pd.read_parquet(synth.label_noise)
    table = pd.read_parquet(run.table)
    scored = table[table["label_score"].notna()].copy()
    flipped = scored["sample_id"].isin(set(truth["sample_id"])).to_numpy()
    missing = len(set(truth["sample_id"]) - set(scored["sample_id"]))
    flagged = scored["label_issue"].to_numpy(bool)
    differs = (scored["suggested"] != scored["given"]).to_numpy()
    score = scored["label_score"].to_numpy()
    out = {"audit_run": run.ref, "synth_run": synth.ref, "train_model": run.inputs.get(
        "model", {}).get("path"), "config": run.config.to_dict(), "scored": len(scored),
        "flipped": int(flipped.sum()), "flipped_not_scored": missing,
        "at_run_cut": prf(flagged, flipped),
        "suggested_is_true_label": None}
    right = scored.loc[flipped & flagged, ["sample_id", "suggested"]].merge(
        truth[["sample_id", "true_name"]], on="sample_id")
    if len(right):
        out["suggested_is_true_label"] = round(float((right["suggested"] == right["true_name"])
                                                     .mean()), 4)
    split = _split(ws, run)
    if split is not None:
        val = scored["sample_id"].isin(split).to_numpy()
        out["model_train_rows"] = prf(flagged & ~val, flipped & ~val)
        out["model_val_rows"] = prf(flagged & val, flipped & val)
    out["sweep"] = {c: prf(differs & (score >= c), flipped)
                    for c in CUTS[run.config.label_score]}
    for db in sorted(scored["source"].unique()):
        sel = scored["source"].to_numpy() == db
        out[f"database_{db}"] = prf(flagged & sel, flipped & sel)
    out["duplicates_across_databases"] = int(table["duplicate"].sum())
    out["test_duplicates"] = int(table["test_duplicate"].sum())
    out["outliers"] = int(table["outlier"].sum())
    out["outliers_with_flipped_label"] = int(table.loc[table["outlier"], "sample_id"]
                                             .isin(set(truth["sample_id"])).sum())
    return out


def _split(ws: Workspace, run: AuditRun) -> set[str] | None:
    """Validation sample ids of the train run whose model the audit used, if known."""
    raw = json.loads((run.path / "manifest.json").read_text())["config"].get("model")
    if raw is None:
        return None
    path = ws.locate(raw)
    for parent in [path, *path.parents]:
        if (parent / "split.json").is_file():
            return set(json.loads((parent / "split.json").read_text())["val_sample_ids"])
    return None


def copies(ws: Workspace, run: AuditRun, n: int) -> dict:
    """Hash bits and cosines of edited copies against those of the nearest distinct faces."""
    import io

    from PIL import Image

    from omnifer.data.cache import decoded_images
    from omnifer.data.images import decode_bytes, read_image_bytes, resize
    from omnifer.mining.leaks import image_hashes, nearest_rows
    from omnifer.models.embedder import Embedder
    from omnifer.pipeline import resolve
    from omnifer.pipeline.embeddings import image_cache

    raw = json.loads((run.path / "manifest.json").read_text())["config"]
    embed = Embedder(ws.locate(raw["model"]), device="cpu")
    data = resolve.read_data(ws, ws.locate(raw["data"]))
    images = decoded_images(data, embed.size, image_cache(ws))
    hashes, emb = image_hashes(iter(images)), embed(images).astype(np.float32)
    src = data.table["source"].to_numpy()
    bits, cos = np.zeros(len(src), np.int64), np.zeros(len(src), np.float32)
    for db in np.unique(src):
        inside, other = np.flatnonzero(src == db), np.flatnonzero(src != db)
        bits[inside] = nearest_rows(hashes[inside], hashes[other])[0]
        for a in range(0, len(inside), 1024):
            cos[inside[a:a + 1024]] = (emb[inside[a:a + 1024]] @ emb[other].T).max(axis=1)
    out = {"distinct": {"faces": len(src), "bits_min": int(bits.min()),
                        "bits_q001": float(np.quantile(bits, 0.001)),
                        "cos_max": round(float(cos.max()), 4),
                        "cos_q999": round(float(np.quantile(cos, 0.999)), 4)}}

    def jpeg(x: np.ndarray, quality: int = 95) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(x)).save(buf, format="JPEG", quality=quality)
        return decode_bytes(buf.getvalue())[0]

    edits = {
        "mirror": lambda x: jpeg(x[:, ::-1]),
        "bright_1.15": lambda x: jpeg(np.clip(x * 1.15, 0, 255).astype(np.uint8)),
        "jpeg_60": lambda x: jpeg(x, 60),
        "resize_75": lambda x: jpeg(np.asarray(Image.fromarray(x).resize(
            (x.shape[1] * 3 // 4, x.shape[0] * 3 // 4)))),
        "crop_95": lambda x: jpeg(x[x.shape[0] // 40:-(x.shape[0] // 40),
                                    x.shape[1] // 40:-(x.shape[1] // 40)]),
    }
    pick = np.random.default_rng(0).choice(len(src), min(n, len(src)), replace=False)
    originals = [decode_bytes(read_image_bytes(r))[0] for r in data.table["image"].iloc[pick]]
    base = np.stack([resize(x, embed.size) for x in originals])
    h0 = image_hashes(iter(base), mirrored=True)
    e0 = emb[pick]
    e0m = embed(np.ascontiguousarray(base[:, :, ::-1])).astype(np.float32)
    for name, edit in edits.items():
        copy = np.stack([resize(edit(x), embed.size) for x in originals])
        hc, ec = image_hashes(iter(copy)), embed(copy).astype(np.float32)
        b = np.minimum(np.bitwise_count(hc ^ h0[:len(pick)]).sum(1),
                       np.bitwise_count(hc ^ h0[len(pick):]).sum(1))
        c = np.maximum((ec * e0).sum(1), (ec * e0m).sum(1))
        out[name] = {"bits_max": int(b.max()), "cos_min": round(float(c.min()), 4),
                     "caught": int(((b <= run.config.hash_distance if run.config.hash_distance
                                     is not None else False) | (c >= run.config
                                                                .duplicate_threshold)).sum()),
                     "of": len(pick)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", default=".")
    ap.add_argument("--run", default=None, help="audit run [default: the latest]")
    ap.add_argument("--copies", type=int, default=0,
                    help="also measure the duplicate checks on N edited copies")
    ap.add_argument("--audit", nargs=argparse.REMAINDER, default=None,
                    help="run `omnifer audit` with these flags first")
    args = ap.parse_args()
    ws = Workspace(args.workspace)
    if args.audit is not None:
        from contextlib import redirect_stdout

        from omnifer.cli.main import main as omnifer

        try:
            with redirect_stdout(sys.stderr):  # the command's summary; stdout is the JSON
                omnifer(["-q", "-w", str(ws.root), "audit", *args.audit])
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise
    found = ws.resolve(args.run, "audit")
    run = AuditRun.from_run(found)
    result = evaluate(ws, run)
    if args.copies:
        result["copies"] = copies(ws, run, args.copies)
    print(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
