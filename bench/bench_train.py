"""Training throughput: the full ``omnifer train`` loop against bare forward+backward.

Both arms use the same model config and batch size in the same process, alternating, so the
machine's load affects them alike. The loop arm is the real ``train()`` on real decoded images
(sampling, balancing, augmentation, masked multitask loss, clipping, AdamW, schedule); its rate
is the training phase of the epoch as ``train()`` records it (validation and checkpoint
writing excluded: they happen once per epoch). The bare arm is ``model(x)`` + backward of
the same multitask loss on one fixed batch already in memory (no data preparation, no
optimiser step).

    python bench/bench_train.py --data demo/data/labeled.toml --backbone convnet --size 64
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from omnifer import host
from omnifer.data import read_labeled
from omnifer.data.batches import BatchMaker
from omnifer.data.cache import decoded_images
from omnifer.models import build_model
from omnifer.train import TrainConfig, train
from omnifer.train.evaluate import align_aus
from omnifer.train.loop import LABEL_KEYS, model_config_for
from omnifer.train.losses import multitask_loss


def bare(config: TrainConfig, labeled, images, steps: int) -> float:
    model = build_model(model_config_for(labeled, config), seed=0)
    model.train()
    maker = BatchMaker(images, mean=model.config.mean, std=model.config.std,
                       device=torch.device("cpu"))
    rows = np.arange(config.batch_size)
    x = maker(rows)
    arrays = align_aus(labeled.arrays(), labeled.aus, model.config.aus)
    batch = {k: torch.from_numpy(np.ascontiguousarray(arrays[k][rows])) for k in LABEL_KEYS}
    multitask_loss(model(x), batch)["total"].backward()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        multitask_loss(model(x), batch)["total"].backward()
    return steps * config.batch_size / (time.perf_counter() - t0)


def loop(config: TrainConfig, labeled, cache: Path, steps: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        result = train(labeled, out, config=config, cache_dir=cache)
    entry = result.history[0][-1]
    return entry["train_samples"] / entry["train_seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="labeled data (e.g. demo/data/labeled.toml)")
    ap.add_argument("--backbone", default="convnet")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30, help="training steps per measurement")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    torch.manual_seed(0)
    labeled = read_labeled(args.data)
    n = args.steps * args.batch_size
    labeled = labeled.subset(np.random.default_rng(0).permutation(len(labeled))[:n])
    config = TrainConfig(backbone=args.backbone, input_size=args.size, batch_size=args.batch_size,
                         epochs=1, val_fraction=0.0, patience=0, device="cpu")
    with tempfile.TemporaryDirectory() as cache:
        images = decoded_images(labeled, args.size, cache)
        bare_rates, loop_rates = [], []
        for r in range(args.repeat):
            bare_rates.append(bare(config, labeled, images, args.steps))
            loop_rates.append(loop(config, labeled, Path(cache), args.steps))
            print(f"round {r + 1}: bare {bare_rates[-1]:.1f} samples/s, "
                  f"loop {loop_rates[-1]:.1f} samples/s", flush=True)
    b, lo = statistics.median(bare_rates), statistics.median(loop_rates)
    print(f"\n{host.describe()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {args.backbone} @ {args.size}px, "
          f"batch {args.batch_size}, {args.steps} steps x {args.repeat} rounds")
    print(f"median bare forward+backward: {b:.1f} samples/s")
    print(f"median full training loop:    {lo:.1f} samples/s")
    print(f"loop / bare: {lo / b:.1%} (target >= 85%)")


if __name__ == "__main__":
    main()
