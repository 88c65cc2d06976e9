"""Dataset distillation on scikit-learn's handwritten digits (real data, available offline).

Data: ``sklearn.datasets.load_digits()`` (1797 images of 8x8 px, 10 classes), values /16 into
[0, 1], upsampled to ``--size`` px (bilinear), one channel. Split: ``train_test_split(
test_size=0.2, stratify=labels, random_state=0)`` -> 1437 train / 360 test images.

For each images-per-class value, every arm yields a training set: ``dm``, ``gm``, ``tm``
(distilled from the train split), ``random``, ``herding``, ``k-center`` (coresets of the
same size; herding and k-center on the penultimate features of a ConvNet trained on the train
split) and ``full`` (the whole train split). ``evaluate_sets`` then trains ``--seeds`` fresh
ConvNets on each set with one recipe and scores them on the test split. Flips are off
(digits are not mirror-symmetric).

    python bench/bench_distill_digits.py --ipc 1 --arms dm,random,herding,k-center
    python bench/bench_distill_digits.py --ipc 10 --arms dm,random,herding,k-center
    python bench/bench_distill_digits.py --ipc 1 --arms gm,tm --gm-iters 200 --tm-iters 300 \
        --tm-expert-batch 32 --cache /tmp/experts
    python bench/bench_distill_digits.py --ipc 10 --arms gm --gm-iters 60 --gm-outer 10 --gm-inner 5
    python bench/bench_distill_digits.py --ipc 10 --arms tm --tm-iters 200 --tm-expert-batch 32 \
        --cache /tmp/experts
    python bench/bench_distill_digits.py --ipc 1 --arms full --full-epochs 100
    python bench/bench_distill_digits.py --timing --width 128   # dm / gm at 32 and 64 px

Each of these stays under about 10 minutes on one CPU core (width 32: the literature's 128
is about 7x slower at 16 px).

Runs on one thread unless ``--threads`` says otherwise; CUDA when present (``--device``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from omnifer import host
from omnifer.distill import (NO_FLIP_STRATEGY, build_convnet, distill, evaluate_sets,
                             select_coreset, train_experts)
from omnifer.distill.networks import channel_stats, train_network

ARMS = ("dm", "gm", "tm", "random", "herding", "k-center", "full")


def load_digits(size: int):
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.clamp(0, 1).numpy()
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    return xtr, ytr, xte, yte


def features(x, y, args, device):
    """Penultimate features of a ConvNet trained on the train split (for herding, k-center)."""
    mean, std = channel_stats(torch.from_numpy(x))
    net = build_convnet(1, args.size, 10, seed=0, width=args.width, mean=mean, std=std,
                        device=device)
    xd, yd = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    train_network(net, xd, yd, epochs=args.feature_epochs, lr=0.01, batch_size=256,
                  momentum=0.9, weight_decay=5e-4, augment=NO_FLIP_STRATEGY,
                  gen=torch.Generator().manual_seed(0))
    with torch.no_grad():
        emb = [net(xd[i:i + 512], embed=True) for i in range(0, len(xd), 512)]
    return torch.cat(emb).cpu().numpy()


def method_settings(method: str, ipc: int, args) -> dict:
    if method == "dm":
        return {"iterations": args.dm_iters, "lr_images": args.dm_lr,
                "options": {"batch_real": args.batch_real}}
    if method == "gm":
        return {"iterations": args.gm_iters, "lr_images": args.gm_lr,
                "options": {"batch_real": args.batch_real, "outer_loop": args.gm_outer or None,
                            "inner_loop": args.gm_inner}}
    return {"iterations": args.tm_iters, "lr_images": args.tm_lr, "soft_labels": args.tm_soft,
            "options": {"syn_steps": args.tm_syn_steps, "expert_epochs": args.tm_expert_epochs,
                        "max_start_epoch": args.tm_max_start}}


def run_benchmark(args, device) -> None:
    xtr, ytr, xte, yte = load_digits(args.size)
    mean, std = channel_stats(torch.from_numpy(xtr))
    arms = args.arms.split(",")
    print(f"digits: {len(xtr)} train / {len(xte)} test images, {args.size} px, "
          f"ConvNet width {args.width}, device {device}, torch threads {torch.get_num_threads()}\n")
    experts, expert_seconds = None, 0.0
    if "tm" in arms:
        t0 = time.perf_counter()
        experts = train_experts(xtr, ytr, n_classes=10, n_experts=args.tm_experts,
                                epochs=args.tm_expert_train_epochs, cache_dir=args.cache,
                                seed=0, batch_size=args.tm_expert_batch,
                                augment=NO_FLIP_STRATEGY, width=args.width, device=device)
        expert_seconds = time.perf_counter() - t0
        print(f"tm experts: {args.tm_experts} x {args.tm_expert_train_epochs} epochs "
              f"(batch {args.tm_expert_batch}), "
              f"{expert_seconds:.1f} s (loaded from the cache when already there)\n")
    emb = None
    if {"herding", "k-center"} & set(arms):
        emb = features(xtr, ytr, args, device)

    rows = []
    for ipc in args.ipc:
        sets, timing = {}, {}
        for arm in arms:
            if arm in ("dm", "gm", "tm"):
                result = distill(xtr, ytr, n_classes=10, method=arm, images_per_class=ipc,
                                 augment=NO_FLIP_STRATEGY, width=args.width, seed=0,
                                 device=device, experts=experts if arm == "tm" else None,
                                 **method_settings(arm, ipc, args))
                sets[arm] = result
                timing[arm] = (result.seconds, result.seconds / max(result.iterations, 1),
                               result.iterations)
            elif arm == "full":
                pass
            else:
                idx = select_coreset(arm, emb, ytr, ipc, seed=0)
                sets[arm] = (xtr[idx], ytr[idx])
        scores = evaluate_sets(sets, (xte, yte), n_classes=10, seeds=args.seeds,
                               epochs=args.epochs, augment=NO_FLIP_STRATEGY, width=args.width,
                               mean_std=(mean, std), device=device)
        if "full" in arms:
            scores.update(evaluate_sets({"full": (xtr, ytr)}, (xte, yte), n_classes=10,
                                        seeds=args.seeds, epochs=args.full_epochs or args.epochs,
                                        augment=NO_FLIP_STRATEGY, width=args.width,
                                        mean_std=(mean, std), device=device))
        for arm in arms:
            s = scores[arm]
            rows.append((arm, ipc if arm != "full" else len(xtr) // 10, s, timing.get(arm)))

    print("| arm | images/class | accuracy % (mean ± std) | macro-F1 % | per seed acc % "
          "| distill s | s / iteration | iterations | eval s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for arm, ipc, s, t in rows:
        per_seed = " ".join(f"{100 * a:.1f}" for a in s["accuracy"])
        dist = (f"{t[0]:.1f} | {t[0] / t[2] if t[2] else 0:.3f} | {t[2]}" if t else "- | - | -")
        print(f"| {arm} | {'~' if arm == 'full' else ''}{ipc} | {100 * s['mean']:.1f} ± "
              f"{100 * s['std']:.1f} | {100 * np.mean(s['macro_f1']):.1f} | {per_seed} | {dist} "
              f"| {s['seconds']:.0f} |")
    if experts is not None:
        print(f"\ntm experts: {expert_seconds:.1f} s (not included in tm's distill seconds)")


def run_timing(args, device) -> None:
    """Seconds of one dm and one gm iteration on random 3-channel data, 7 classes, 10 ipc.

    The time is the distillation loop's own (``Distilled.seconds``), without input checks.
    """
    print("| method | size px | ConvNet depth | s / iteration | setting |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for size in (32, 64):
        n_per_class = max(args.batch_real, 10)
        x = rng.random((7 * n_per_class, 3, size, size), dtype=np.float32)
        y = np.repeat(np.arange(7), n_per_class)
        for method, opts, note in (
            ("dm", {"batch_real": args.batch_real}, f"batch_real {args.batch_real}"),
            ("gm", {"batch_real": args.batch_real, "outer_loop": 1, "inner_loop": 0},
             f"one outer step (matching + image update), batch_real {args.batch_real}"),
            ("gm", {"batch_real": args.batch_real, "outer_loop": 2, "inner_loop": 1},
             "two outer steps + one inner epoch on the 70 synthetic images"),
        ):
            r = distill(x, y, n_classes=7, method=method, images_per_class=10,
                        iterations=args.timing_iters, width=args.width, device=device,
                        options=opts)
            per = r.seconds / args.timing_iters
            depth = len(build_convnet(3, size, 7, 0, width=8).features) // 4
            print(f"| {method} | {size} | {depth} | {per:.2f} | {note} |", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--size", type=int, default=16, help="digits are upsampled from 8 px")
    p.add_argument("--width", type=int, default=32,
                   help="ConvNet width (128 in the literature; 32 keeps one-core runs short)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=300, help="evaluation epochs for every arm")
    p.add_argument("--full-epochs", type=int, default=0,
                   help="evaluation epochs of the full arm (0: --epochs)")
    p.add_argument("--feature-epochs", type=int, default=30,
                   help="epochs of the feature network for herding / k-center")
    p.add_argument("--batch-real", type=int, default=128)
    p.add_argument("--dm-iters", type=int, default=500)
    p.add_argument("--dm-lr", type=float, default=0.05)
    p.add_argument("--gm-iters", type=int, default=200)
    p.add_argument("--gm-lr", type=float, default=0.01)
    p.add_argument("--gm-outer", type=int, default=0, help="0: by ipc (DC's table)")
    p.add_argument("--gm-inner", type=int, default=None, help="default: by ipc (DC's table)")
    p.add_argument("--tm-iters", type=int, default=500)
    p.add_argument("--tm-lr", type=float, default=0.01)
    p.add_argument("--tm-soft", action="store_true", help="learn soft labels with tm")
    p.add_argument("--tm-syn-steps", type=int, default=20)
    p.add_argument("--tm-expert-epochs", type=int, default=2)
    p.add_argument("--tm-max-start", type=int, default=10)
    p.add_argument("--tm-experts", type=int, default=5)
    p.add_argument("--tm-expert-train-epochs", type=int, default=15)
    p.add_argument("--tm-expert-batch", type=int, default=256)
    p.add_argument("--cache", default=None, help="folder for tm expert trajectories")
    p.add_argument("--timing", action="store_true", help="only time dm / gm at 32 and 64 px")
    p.add_argument("--timing-iters", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    from omnifer.models import resolve_device

    torch.set_num_threads(args.threads)
    device = str(resolve_device(args.device))
    print("command: `python " + " ".join(shlex.quote(a) for a in sys.argv) + "`")
    print(f"machine: {host.describe()}, torch {torch.__version__}\n")
    t0 = time.perf_counter()
    (run_timing if args.timing else run_benchmark)(args, device)
    print(f"\nwall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
