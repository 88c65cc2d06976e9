"""Prediction throughput: ``pipeline.predict`` end to end against the bare model forward.

On the same N images (default: the 2,000 pool JPEGs of ``omnifer synth --preset small``,
64x64, written once under ``--dir``), the end-to-end arm is ``pipeline.predict(ws, config,
model=..., inputs=[folder])``: listing, reading, JPEG decoding and resizing in reading
threads, the model, the ensemble mean, uncertainty, OOD scores and the pandas table. The bare
arm is the model's forward pass alone (``model(x)`` under ``torch.inference_mode``) on the
same images already decoded, resized and normalised into float tensors on the device, in
batches of the same size. The arms alternate; each is run ``--runs`` times and the medians
are compared. The model is an untrained checkpoint of ``--backbone`` at ``--size`` (weights do
not change the cost), or ``--model`` (a train run or checkpoint folder).

    python bench/bench_predict.py --dir /tmp/omnifer-bench-predict --backbone resnet18 --size 112
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ensure_images(root: Path, n: int) -> Path:
    """A folder of at least ``n`` JPEGs: the small preset's pool (written once)."""
    from omnifer import pipeline

    pool = root / "data" / "pool"
    if not pool.is_dir():
        pipeline.synth(root, pipeline.SynthOptions(preset="small"), out=root / "data")
    files = sorted(pool.rglob("*.jpg"))
    if len(files) < n:
        raise SystemExit(f"{pool} has {len(files)} JPEGs, fewer than --images {n}")
    folder = root / f"images-{n}"
    if not folder.is_dir():
        folder.mkdir()
        for f in files[:n]:
            (folder / f.name).symlink_to(f)
    return folder


def ensure_model(root: Path, backbone: str, size: int) -> Path:
    from omnifer.models import ModelConfig, build_model, save_checkpoint

    out = root / f"model-{backbone}-{size}"
    if not (out / "model.json").is_file():
        save_checkpoint(build_model(ModelConfig(backbone=backbone, input_size=size), seed=0), out)
    return out


def bare_forward(model: object, batches: list, device: object) -> float:
    import torch

    t0 = time.perf_counter()
    with torch.inference_mode():
        for x in batches:
            out = model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    del out
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default="/tmp/omnifer-bench-predict",
                        help="workspace, images and models (reused across runs)")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--model", default=None, help="a train run or checkpoint folder")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch

    from omnifer import pipeline
    from omnifer.data.images import decode_image
    from omnifer.device import resolve_device
    from omnifer.models import load_models
    from omnifer.pipeline import resolve
    from omnifer.train.predict_config import PredictConfig

    root = Path(args.dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    folder = ensure_images(root, args.images)
    model_path = Path(args.model) if args.model else ensure_model(root, args.backbone, args.size)
    device = resolve_device(args.device)
    config = PredictConfig(batch_size=args.batch_size, device=str(device), distance=False)
    models = load_models(resolve.train_run(resolve.workspace(root), str(model_path)),
                         device=device)
    cfg = models[0].config
    files = sorted(folder.glob("*.jpg"))
    crops = np.stack([decode_image(f, cfg.input_size) for f in files])
    mean = torch.tensor(cfg.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, device=device).view(1, 3, 1, 1)
    batches = [((torch.from_numpy(crops[i:i + args.batch_size]).to(device)
                 .permute(0, 3, 1, 2).float() / 255.0) - mean) / std
               for i in range(0, len(crops), args.batch_size)]
    n = len(files)
    print(f"{n} images ({crops.shape[1]}x{crops.shape[2]} after resizing) in {folder}")
    print(f"model {model_path}: {cfg.backbone} at {cfg.input_size} px, {len(models)} member(s); "
          f"device {device}, batch {args.batch_size}, {torch.get_num_threads()} torch threads")
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores visible)")
    pipeline.predict(root, config, model=str(model_path), inputs=[folder])  # warm-up
    bare_forward(models[0], batches[:1], device)
    ends, bares = [], []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        res = pipeline.predict(root, config, model=str(model_path), inputs=[folder])
        ends.append(time.perf_counter() - t0)
        assert res.counts["faces"] == n, res.counts
        bares.append(sum(bare_forward(m, batches, device) for m in models))
    end, bare = statistics.median(ends), statistics.median(bares)
    print(f"{'arm':<28}{'median s':>10}{'images/s':>10}   runs (s)")
    print(f"{'pipeline.predict (files)':<28}{end:>10.2f}{n / end:>10.0f}   "
          + " ".join(f"{t:.2f}" for t in ends))
    print(f"{'bare forward (tensors)':<28}{bare:>10.2f}{n / bare:>10.0f}   "
          + " ".join(f"{t:.2f}" for t in bares))
    print(f"ratio end-to-end / bare throughput: {bare / end:.2f} (target >= 0.80)")


if __name__ == "__main__":
    main()
