"""Out-of-distribution detection on the synthetic benchmark: AUROC and FPR at 95% TPR of
each score (max-softmax, entropy, epistemic, embedding distance) for several models.

Two out-of-distribution sets, written under ``--work``: the synthetic pool's non-face
distractors (its hidden truth says which) and real non-face photos shipped with
scikit-image (the 100 non-faces of ``lfw_subset()`` and crops of its bundled photos that
show no person). The in-distribution images are the synthetic test set. Models: train-run
references of a workspace, e.g. the one ``bench/generations.py`` leaves:

    python bench/ood_eval.py --workspace bench-runs/generations/seed0 \\
        --models RUN@g0.0 RUN@g0 RUN@g2 --mc-dropout RUN@g0.0
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from omnifer import pipeline
from omnifer.artifacts import atomic_write_json
from omnifer.train.config import EvaluateConfig

#: scikit-image's bundled photos that show no person
PHOTOS = ("coffee", "chelsea", "rocket", "hubble_deep_field", "gravel", "brick", "grass",
          "coins", "moon", "page", "text", "retina", "immunohistochemistry", "horse",
          "clock", "microaneurysms", "cell")


def real_nonfaces(out: Path, crops: int = 8, seed: int = 0) -> Path:
    import skimage.data as data

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    faces = data.lfw_subset()
    for i, img in enumerate(faces[100:]):  # the second hundred are the non-faces
        Image.fromarray((img * 255).astype(np.uint8)).convert("RGB").save(out / f"lfw_{i}.png")
    for name in PHOTOS:
        img = np.asarray(getattr(data, name)())
        img = img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)
        img = (img[..., :3] if img.dtype == np.uint8 else
               (255 * (img[..., :3] > 0.5 if img.dtype == bool else img[..., :3]))
               .astype(np.uint8))
        h, w = img.shape[:2]
        for j in range(crops):
            s = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
            y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
            Image.fromarray(img[y:y + s, x:x + s]).save(out / f"{name}_{j}.png")
    return out


def synthetic_nonfaces(data_dir: Path, out: Path) -> Path:
    truth = pd.read_parquet(data_dir / "pool_truth.parquet")
    out.mkdir(parents=True, exist_ok=True)
    for f in truth.loc[truth["kind"] == "nonface", "file"]:
        shutil.copy(data_dir / "pool" / f, out / f.replace("/", "_"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--mc-dropout", nargs="*", default=[], help="models also run with MC dropout")
    ap.add_argument("--passes", type=int, default=20)
    ap.add_argument("--rate", type=float, default=0.3)
    ap.add_argument("--work", default="bench-runs/ood")
    ap.add_argument("--out", default="bench-runs/ood.json")
    args = ap.parse_args()
    ws, work = Path(args.workspace), Path(args.work)
    sets = {"synthetic non-faces": synthetic_nonfaces(ws / "data", work / "synthetic"),
            "real non-faces": real_nonfaces(work / "real")}
    arms = [(m, EvaluateConfig(device="cpu")) for m in args.models]
    arms += [(m, EvaluateConfig(device="cpu", mc_dropout=args.passes, mc_rate=args.rate))
             for m in args.mc_dropout]
    results = []
    for model, config in arms:
        rec = pipeline.evaluate(ws, config, model=model, data=ws / "data" / "test.toml",
                                ood=list(sets.values()))
        name = model + (f" + MC dropout ({args.passes}, p={args.rate})" if config.mc_dropout
                        else "")
        for label, folder in sets.items():
            for score, s in rec.results["ood"][str(folder)].items():
                results.append({"model": name, "set": label, "score": score, **s})
        atomic_write_json(Path(args.out), results)
    table = pd.DataFrame(results)
    for label in sets:
        part = table[table["set"] == label]
        n = part.iloc[0]
        print(f"\n{label} ({n['n_out']} images vs {n['n_in']} test faces): AUROC / FPR95")
        cells = part.assign(cell=part["auroc"].map("{:.3f}".format) + " / "
                            + part["fpr95"].map("{:.3f}".format)) \
            .pivot(index="model", columns="score", values="cell")
        print("| model | " + " | ".join(cells.columns) + " |")
        print("|---|" + "---|" * len(cells.columns))
        for model, row in cells.iterrows():
            print(f"| {model} | " + " | ".join(row.fillna("-")) + " |")


if __name__ == "__main__":
    main()
