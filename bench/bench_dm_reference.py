"""Seconds per iteration of omnifer's dm against the reference distribution matching, side by side.

The reference is Zhao & Bilen, "Dataset Condensation with Distribution Matching"
(github.com/VICO-UoE/DatasetCondensation, ``main_DM.py``). ``--reference`` names a checkout of
that repository; this script puts it on ``sys.path`` and imports its ``utils`` module
(``get_network``, ``DiffAugment``, ``ParamDiffAug``). One reference iteration is the body of
``main_DM.py``'s training loop for ConvNets: a fresh random network, then for each class a real
batch and the class's synthetic images under one siamese DSA draw, ``net.embed`` of each, the
squared distance of their mean embeddings summed over classes, and one SGD step on the images
(lr 1, momentum 0.5, as there). omnifer's arm is ``distill(method="dm")``.

Both arms see the same settings: random 3-channel data in [0, 1] at 32 px, ``--classes``
classes of ``--real`` images, ``--ipc`` synthetic images per class, ``--batch-real`` real images
per class per iteration, a ConvNet of depth 3 with instance norm and ``--width`` channels,
``--threads`` torch threads. Each keeps its own default DSA: the reference draws one of its six
operations per call, omnifer applies all six of its own.

Every round runs each arm for ``--iters`` + 1 iterations, the order of the arms rotating from
round to round (A B, B A, ...); the first iteration of every run (network and optimizer set-up,
first-touch allocations) is not counted. The table gives the median, min and max over all
counted iterations and the ratio of medians to the reference. ``--one-pass`` adds omnifer's
earlier dm step (one forward pass over all classes' real images, one over all synthetic images)
as a third arm.

    git --git-dir=<mirror of VICO-UoE/DatasetCondensation> archive HEAD | tar -x -C /tmp/dcref
    python bench/bench_dm_reference.py --reference /tmp/dcref --width 128 --batch-real 128
    python bench/bench_dm_reference.py --reference /tmp/dcref --width 32 --batch-real 64
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from omnifer import host
from omnifer.distill import METHODS, distill, dsa
from omnifer.distill.methods import DistributionMatching

REFERENCE_STRATEGY = "color_crop_cutout_flip_scale_rotate"  # main_DM.py's default


def import_reference(path: str):
    """The reference's ``utils`` module, or exit with one line saying why it cannot load."""
    root = Path(path)
    if not (root / "utils.py").is_file() or not (root / "networks.py").is_file():
        sys.exit(f"--reference {path}: no utils.py and networks.py there; pass a checkout of "
                 "VICO-UoE/DatasetCondensation")
    sys.path.insert(0, str(root.resolve()))
    try:
        import utils
    except Exception as exc:  # noqa: BLE001 - any failure gets the same one line
        sys.exit(f"cannot import the reference's utils from {path}: {type(exc).__name__}: {exc}")
    missing = [n for n in ("get_network", "DiffAugment", "ParamDiffAug") if not hasattr(utils, n)]
    if missing:
        sys.exit(f"the reference's utils at {path} lacks {', '.join(missing)}")
    return utils


def reference_seconds(utils, real: list[torch.Tensor], *, ipc: int, batch_real: int,
                      width: int, iterations: int, seed: int, device: str) -> list[float]:
    """Seconds of each of ``iterations`` reference DM iterations (``main_DM.py``'s loop body)."""
    n_classes, channel, size = len(real), real[0].shape[1], real[0].shape[2]
    param = utils.ParamDiffAug()
    rng = np.random.default_rng(seed)

    def get_images(c: int, n: int) -> torch.Tensor:  # random n images of class c
        return real[c][rng.permutation(real[c].shape[0])[:n]]

    image_syn = torch.cat([get_images(c, ipc) for c in range(n_classes)]).requires_grad_(True)
    optimizer_img = torch.optim.SGD([image_syn], lr=1.0, momentum=0.5)
    stamps = [time.perf_counter()]
    for _ in range(iterations):
        net = utils.get_network(f"ConvNetW{width}", channel, n_classes, (size, size)).to(device)
        net.train()
        for p in net.parameters():
            p.requires_grad = False
        loss = torch.tensor(0.0).to(device)
        for c in range(n_classes):
            img_real = get_images(c, batch_real)
            img_syn = image_syn[c * ipc:(c + 1) * ipc].reshape((ipc, channel, size, size))
            aug_seed = int(time.time() * 1000) % 100000
            img_real = utils.DiffAugment(img_real, REFERENCE_STRATEGY, seed=aug_seed, param=param)
            img_syn = utils.DiffAugment(img_syn, REFERENCE_STRATEGY, seed=aug_seed, param=param)
            output_real = net.embed(img_real).detach()
            output_syn = net.embed(img_syn)
            loss += torch.sum((output_real.mean(0) - output_syn.mean(0)) ** 2)
        optimizer_img.zero_grad()
        loss.backward()
        optimizer_img.step()
        loss.item()
        stamps.append(time.perf_counter())
    return np.diff(stamps).tolist()


class OnePassDM(DistributionMatching):
    """omnifer's earlier dm step: one forward pass over all classes' real images, one over all
    synthetic images (same draws, same loss)."""

    def step(self, run) -> float:
        net = run.net().requires_grad_(False)
        seeds = [run.seed() for _ in range(run.n_classes)]
        real = [dsa(run.real_batch(c, self.opts.batch_real), s, run.strategy)
                for c, s in enumerate(seeds)]
        syn = torch.cat([dsa(run.syn[run.rows(c)], s, run.strategy) for c, s in enumerate(seeds)])
        with torch.no_grad():
            real_emb = net(torch.cat(real), embed=True).split([len(r) for r in real])
            real_mean = torch.stack([e.mean(0) for e in real_emb])
        syn_mean = net(syn, embed=True).view(run.n_classes, run.ipc, -1).mean(1)
        loss = (real_mean - syn_mean).pow(2).sum()
        run.update(loss)
        return float(loss.detach())


def omnifer_seconds(x: np.ndarray, y: np.ndarray, *, method: str, n_classes: int, ipc: int,
                    batch_real: int, width: int, iterations: int, seed: int,
                    device: str) -> list[float]:
    """Seconds of each of ``iterations`` iterations of ``distill(method=...)``."""
    stamps = [time.perf_counter()]
    distill(x, y, n_classes=n_classes, method=method, images_per_class=ipc,
            iterations=iterations, width=width, depth=3, batch_real=batch_real, seed=seed,
            device=device, progress=lambda *_: stamps.append(time.perf_counter()))
    return np.diff(stamps).tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", required=True,
                    help="a checkout of github.com/VICO-UoE/DatasetCondensation")
    ap.add_argument("--width", type=int, default=128, choices=(32, 64, 128, 256))
    ap.add_argument("--batch-real", type=int, default=128)
    ap.add_argument("--classes", type=int, default=7)
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--real", type=int, default=500, help="real images per class")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--iters", type=int, default=3, help="iterations counted per arm and round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--one-pass", action="store_true",
                    help="also time omnifer's earlier one-pass dm step")
    args = ap.parse_args()

    utils = import_reference(args.reference)
    for message in (".*torch.meshgrid.*", ".*align_corners.*"):  # the reference's DSA
        warnings.filterwarnings("ignore", message=message)
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # get_network's own choice
    print("command: `python " + " ".join(shlex.quote(a) for a in sys.argv) + "`")
    print(f"machine: {host.describe()}, device {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"settings: 32 px, 3 channels, {args.classes} classes x {args.real} real images, "
          f"ipc {args.ipc}, batch_real {args.batch_real}, ConvNet width {args.width} depth 3\n")

    x = np.random.default_rng(0).random((args.classes * args.real, 3, 32, 32), dtype=np.float32)
    y = np.repeat(np.arange(args.classes), args.real)
    real = [torch.from_numpy(x[y == c]).to(device) for c in range(args.classes)]
    if args.one_pass:
        METHODS.register("dm-one-pass", OnePassDM)
    common = {"ipc": args.ipc, "batch_real": args.batch_real, "width": args.width,
              "iterations": args.iters + 1, "device": device}
    arms = {
        "reference": lambda s: reference_seconds(utils, real, seed=s, **common),
        "omnifer dm": lambda s: omnifer_seconds(x, y, method="dm", n_classes=args.classes,
                                                seed=s, **common),
    }
    if args.one_pass:
        arms["omnifer dm, one pass"] = lambda s: omnifer_seconds(
            x, y, method="dm-one-pass", n_classes=args.classes, seed=s, **common)
    times: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            per = arms[name](r)[1:]  # the first iteration of a run is set-up
            times[name] += per
            print(f"round {r + 1} {name}: " + " ".join(f"{t:.3f}" for t in per), flush=True)

    ref = statistics.median(times["reference"])
    print("\n| arm | s / iteration (median) | min | max | iterations | / reference |")
    print("|---|---|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.3f} | {min(ts):.3f} | {max(ts):.3f} | {len(ts)} | "
              f"{med / ref:.2f} |")


if __name__ == "__main__":
    main()
