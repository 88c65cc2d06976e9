"""The leak guard against edited copies of test images: how many are mined.

Needs a workspace where synth, train and index ran (``make demo`` makes one in ``demo/``; work
on a copy, the pool gets new files). ``--n`` test images are copied into the indexed pool folder
(under ``leak-bench/``) in five variants: ``exact`` (the same bytes), ``mirror`` (flipped left to
right), ``bright`` (pixel values x1.15, clipped), ``jpeg60`` (recompressed at quality 60) and
``resize75`` (75% of the side, Lanczos); the edited ones are written as JPEG quality 95. The pool
is indexed again (only the new files are embedded) and ``omnifer mine`` runs at each threshold
with the default leak guard (the latest synth run's test set). Counted per variant: the copies
mined (the goal is 0). The same thresholds mined on the pool without the copies give the clean
baseline: pool faces the guard drops there are false alarms.

    python bench/leak_guard.py --workspace /tmp/leakdemo --n 200 --thresholds 0.9,0.8
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
import shutil
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omnifer.cli.main import main as omnifer
from omnifer.workspace import Workspace

FOLDER = "leak-bench"
VARIANTS = ("exact", "mirror", "bright", "jpeg60", "resize75")


def run(ws: Path, *args: str) -> dict[str, Any]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        try:
            omnifer(["-q", "--json", "-w", str(ws), *args])
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise
    return json.loads(buf.getvalue())


def jpeg(image: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def variants(ref: str) -> dict[str, bytes]:
    from PIL import Image

    from omnifer.data.images import decode_image, read_image_bytes

    x = decode_image(ref)
    h, w = x.shape[:2]
    small = np.asarray(Image.fromarray(x).resize((w * 3 // 4, h * 3 // 4), Image.LANCZOS))
    return {"exact": read_image_bytes(ref),
            "mirror": jpeg(np.ascontiguousarray(x[:, ::-1]), 95),
            "bright": jpeg(np.clip(x.astype(np.float32) * 1.15, 0, 255).astype(np.uint8), 95),
            "jpeg60": jpeg(x, 60),
            "resize75": jpeg(small, 95)}


def plant(pool: Path, test: Path, n: int, seed: int) -> None:
    from omnifer.data import read_labeled

    refs = read_labeled(test).table["image"].tolist()
    pick = np.random.default_rng(seed).choice(len(refs), size=min(n, len(refs)), replace=False)
    for i, r in enumerate(sorted(pick)):
        for name, data in variants(refs[r]).items():
            path = pool / FOLDER / name / f"{i:04d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


def mined(result: dict[str, Any]) -> dict[str, Any]:
    keys = pd.read_parquet(result["dataset"], columns=["key"])["key"]
    parts = keys[keys.str.startswith(FOLDER + "/")].str.split("/").str[1]
    c = result["counts"]
    return {"mined": c["mined"], "pool_faces_mined": int(c["mined"] - len(parts)),
            "leak_excluded": c["leak_excluded"],
            "leak_excluded_hash": c.get("leak_excluded_hash", 0),  # absent: no hash check
            **{v: int((parts == v).sum()) for v in VARIANTS}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workspace", required=True, help="a copy of a demo workspace")
    ap.add_argument("--n", type=int, default=200, help="test images copied [200]")
    ap.add_argument("--thresholds", default="0.9,0.8")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--extra", default="", help="more omnifer mine flags")
    ap.add_argument("--out", default=None, help="JSON results [WORKSPACE/leak_guard.json]")
    args = ap.parse_args()
    ws = Path(args.workspace)
    w = Workspace(ws)
    index = w.latest("index")
    synth = w.latest("synth")
    if index is None or synth is None or "test" not in synth.outputs:
        sys.exit(f"{ws} needs a synth run with a test set and an index run")
    pool = w.locate(index.config["pool"])
    test = Path(synth.outputs["test"])
    model = ["--model", str(w.locate(index.config["model"]))]
    index_args = ["--device", args.device, "--workers", "0", *model]
    extra = shlex.split(args.extra)
    thresholds = args.thresholds.split(",")

    shutil.rmtree(pool / FOLDER, ignore_errors=True)
    clean = run(ws, "index", str(pool), *index_args)["run"]
    rows = []
    for t in thresholds:
        r = run(ws, "mine", "--index", clean, "--threshold", t, "--device", args.device, *extra)
        rows.append({"pool": "clean", "threshold": t, **mined(r)})
        print(rows[-1], flush=True)
    plant(pool, test, args.n, args.seed)
    planted = run(ws, "index", str(pool), *index_args)["run"]
    for t in thresholds:
        r = run(ws, "mine", "--index", planted, "--threshold", t, "--device", args.device, *extra)
        rows.append({"pool": f"+{args.n} x {len(VARIANTS)} copies", "threshold": t, **mined(r)})
        print(rows[-1], flush=True)
    out = Path(args.out or ws / "leak_guard.json")
    out.write_text(json.dumps(rows, indent=2))
    print(f"\n```\npython {' '.join(map(shlex.quote, sys.argv))}\n```\n")
    print(f"| pool | --threshold | {' | '.join(VARIANTS)} | other faces mined | "
          "dropped by the guard (by hash) |")
    print("|---|---|" + "---|" * (len(VARIANTS) + 2))
    for r in rows:
        print(f"| {r['pool']} | {r['threshold']} | {' | '.join(str(r[v]) for v in VARIANTS)} | "
              f"{r['pool_faces_mined']} | {r['leak_excluded']} ({r['leak_excluded_hash']}) |")


if __name__ == "__main__":
    main()
