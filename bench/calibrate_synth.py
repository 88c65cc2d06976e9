"""Calibrate the difficulty of the synthetic benchmark.

Trains the same small CNN (CPU, seeded; each model gets a fixed budget of samples seen,
large enough that the 1x model has converged: 150k samples = 45 epochs of 1x, 180k = 5.5
epochs of 10x) on

* 1x: as many expression-labeled faces as the preset's labeled databases carry, drawn from
  the preset's number of labeled identities, and
* 10x: ten times more faces of the same kind (ten times more identities too),

and evaluates both on a test set of the same distribution with disjoint identities. The
benchmark is useful for mining when 10x is clearly above 1x (room for mined data to help) and
both are clearly above chance (1/7 = 14%).

    python bench/calibrate_synth.py                     # demo preset, 64 px, ~10 min on 2 cores
    python bench/calibrate_synth.py --set intensity_min=0.3 --set noise_max=16
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from omnifer import host  # noqa: E402
from omnifer.synth import make_identities, resolve_config, sample_faces  # noqa: E402


def expression_labeled_count(cfg) -> int:
    """Expected expression-labeled rows of a preset: the class folders plus the `multi` rows
    that carry expression (all of the full rows, half of the others)."""
    frac = cfg.multi_full_fraction + (1 - cfg.multi_full_fraction) * 0.5
    return int(round(cfg.n_expr + cfg.n_multi * frac))


def _render(job):
    n, seed_seq, cfg, size, identities = job
    rng = np.random.default_rng(seed_seq)
    return sample_faces(n, rng, config=cfg, size=size, identities=identities)


def make_set(n, seed_seq, cfg, size, identities, workers, chunk=500):
    seqs = seed_seq.spawn(-(-n // chunk))
    jobs = [(min(chunk, n - k * chunk), s, cfg, size, identities) for k, s in enumerate(seqs)]
    if workers > 1:
        import multiprocessing as mp

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
            parts = list(ex.map(_render, jobs))
    else:
        parts = [_render(j) for j in jobs]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1]["expression"] for p in parts])
    return x, y


def build_model(n_classes=7):
    import torch.nn as nn

    def block(i, o, s=1):
        return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

    return nn.Sequential(
        block(3, 24, 2), block(24, 48), nn.MaxPool2d(2), block(48, 64), nn.MaxPool2d(2),
        block(64, 96), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(96, n_classes),
    )


def macro_f1(y, p, k=7):
    f1 = []
    for c in range(k):
        tp = np.sum((p == c) & (y == c))
        fp = np.sum((p == c) & (y != c))
        fn = np.sum((p != c) & (y == c))
        f1.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1))


def train_eval(x, y, xt, yt, *, samples, batch, lr, seed):
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build_model().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    steps = max(1, samples // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    xs = torch.from_numpy(x)  # uint8 NHWC
    ys = torch.from_numpy(y.astype(np.int64))
    n = len(xs)
    perm = torch.randperm(n, generator=g)
    pos = 0
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        if pos + batch > n:
            perm, pos = torch.randperm(n, generator=g), 0
        idx = perm[pos:pos + batch]
        pos += batch
        xb = xs[idx].permute(0, 3, 1, 2).float().div_(255).sub_(0.5).contiguous(memory_format=torch.channels_last)
        flip = torch.rand(len(idx), generator=g) < 0.5
        xb[flip] = xb[flip].flip(3)
        loss = F.cross_entropy(model(xb), ys[idx], label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    train_s = time.perf_counter() - t0
    model.eval()
    preds = []
    with torch.no_grad():
        for k in range(0, len(xt), 512):
            xb = torch.from_numpy(xt[k:k + 512]).permute(0, 3, 1, 2).float().div_(255).sub_(0.5)
            preds.append(model(xb.contiguous(memory_format=torch.channels_last)).argmax(1).numpy())
    p = np.concatenate(preds)
    return {"accuracy": float(np.mean(p == yt)), "macro_f1": macro_f1(yt, p), "train_s": train_s,
            "final_loss": loss.item()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--size", type=int, default=64, help="render size for calibration (default 64)")
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--n1", type=int, default=None, help="1x size (default: the preset's expression-labeled count)")
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--samples", type=int, default=150_000,
                    help="training samples seen by the 1x model (about 45 epochs of demo: converged)")
    ap.add_argument("--samples-big", type=int, default=180_000,
                    help="training samples seen by the 10x model (about 5.5 epochs)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="processes for rendering")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a SynthConfig field (repeatable)")
    ap.add_argument("--only", choices=["1x", "big"], default=None, help="train only one of the two models")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    overrides = dict(s.split("=", 1) for s in args.set)
    cfg = resolve_config(args.preset, **overrides)
    n1 = args.n1 or expression_labeled_count(cfg)
    n10 = args.factor * n1
    print("command:", " ".join([os.path.basename(sys.executable)] + sys.argv))
    print(f"machine: {host.describe()} "
          f"torch={torch.__version__} threads={args.threads}")
    print(f"preset={args.preset} overrides={overrides} size={args.size} n1={n1} n{args.factor}x={n10} "
          f"test={args.n_test} ids1={cfg.n_identities_labeled} ids{args.factor}x="
          f"{cfg.n_identities_labeled * args.factor} samples seen 1x={args.samples} {args.factor}x={args.samples_big}")
    root = np.random.SeedSequence(args.seed)
    s_id1, s_id10, s_idt, s_x1, s_x10, s_xt = root.spawn(6)
    ids1 = make_identities(cfg.n_identities_labeled, np.random.default_rng(s_id1), variation=cfg.identity_variation)
    ids10 = make_identities(cfg.n_identities_labeled * args.factor, np.random.default_rng(s_id10),
                            variation=cfg.identity_variation)
    idst = make_identities(cfg.n_identities_test, np.random.default_rng(s_idt), variation=cfg.identity_variation)
    t0 = time.perf_counter()
    x1, y1 = make_set(n1, s_x1, cfg, args.size, ids1, args.workers)
    x10, y10 = make_set(n10, s_x10, cfg, args.size, ids10, args.workers)
    xt, yt = make_set(args.n_test, s_xt, cfg, args.size, idst, args.workers)
    gen_s = time.perf_counter() - t0
    print(f"rendered {n1 + n10 + args.n_test} faces in {gen_s:.1f}s")
    res = {}
    for name, (x, y), budget in (("1x", (x1, y1), args.samples),
                                 (f"{args.factor}x", (x10, y10), args.samples_big)):
        if args.only and (args.only == "1x") != (name == "1x"):
            continue
        r = train_eval(x, y, xt, yt, samples=budget, batch=args.batch, lr=args.lr, seed=args.seed)
        res[name] = r
        print(f"{name:>4}: n={len(x):6d} accuracy={100 * r['accuracy']:.1f}% macro-F1={100 * r['macro_f1']:.1f} "
              f"(train {r['train_s']:.0f}s, final loss {r['final_loss']:.3f})", flush=True)
    if args.only:
        return
    gap_acc = 100 * (res[f"{args.factor}x"]["accuracy"] - res["1x"]["accuracy"])
    gap_f1 = 100 * (res[f"{args.factor}x"]["macro_f1"] - res["1x"]["macro_f1"])
    print(f"gap {args.factor}x - 1x: accuracy {gap_acc:+.1f} points, macro-F1 {gap_f1:+.1f} points; chance 14.3%")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "n1": n1, "n10": n10, "results": res, "render_s": gen_s}, fh, indent=2)


if __name__ == "__main__":
    main()
