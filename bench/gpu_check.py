"""Exercise every GPU code path of omnifer against its CPU result; one line per check.

    python bench/gpu_check.py                 # on the GPU (make gpu-check FAISS=gpu)
    python bench/gpu_check.py --device cpu    # the same checks with the CPU standing in

Checks: FAISS flat and IVF indexes built and searched on the GPU against the CPU, a GPU index
written through ``index_gpu_to_cpu`` and read back, fp16 embeddings against fp32 (cosine >=
0.999), AMP + channels-last training steps (loss finite and falling), the torch mining scorer
against numpy, and a 2-GPU DDP smoke test when two GPUs are present. A check whose hardware or
library is missing is skipped with the reason; on a machine without CUDA every check is skipped
with that line and the run passes. Exit status 1 when a check fails; the last line is
``gpu check: PASS`` (``... (nothing ran on a GPU)`` when all were skipped that way) or
``gpu check: FAIL``. Takes about a minute on one GPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np


class Skip(Exception):
    """A check that cannot run here (no GPU, no FAISS GPU build, one GPU only)."""


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def gpus_for(device: str) -> list[int]:
    from omnifer.device import faiss_gpus

    if device == "cpu":
        return []
    found = faiss_gpus(device)
    if not found:
        raise Skip("FAISS sees no GPU (install the gpu extra: make venv FAISS=gpu)")
    return found


def check_faiss_flat(device: str, rng: np.random.Generator) -> str:
    from omnifer.pools.faiss_index import build_index, exact_knn, is_gpu_index, search, to_gpu

    base, queries = unit(rng, 100_000, 256), unit(rng, 1_000, 256)
    want_s, want_i = exact_knn(queries, base, 10)
    index = build_index(base, factory="Flat", device=device)  # built on the GPU, returned on CPU
    gpu = to_gpu(index, gpus_for(device)) if device != "cpu" else index
    if device != "cpu" and (gpu is None or not is_gpu_index(gpu)):
        raise AssertionError("the flat index did not move to the GPU")
    got_s, got_i = search(gpu, queries, 10)
    same = float((got_i == want_i).mean())
    assert same >= 0.999 and np.allclose(got_s, want_s, atol=1e-4), \
        f"flat search differs from exact: {same:.4f} of ids equal"
    return f"100k x 256, 1k queries: {same:.4f} of top-10 ids equal to exact, scores within 1e-4"


def check_faiss_ivf(device: str, rng: np.random.Generator) -> str:
    from omnifer.pools.faiss_index import build_index, exact_knn, recall_at_k, search

    base, queries = unit(rng, 100_000, 64), unit(rng, 1_000, 64)  # no clusters: recall < 1
    _, exact = exact_knn(queries, base, 10)
    recalls = {}
    for where in ("cpu", device):
        index = build_index(base, factory="IVF256,Flat", device=where, seed=0)
        _, ids = search(index, queries, 10, params={"nprobe": 32})
        recalls[where] = recall_at_k(ids, exact, 10)
    gap = abs(recalls[device] - recalls["cpu"])
    assert gap <= 0.05, f"IVF recall@10 {recalls[device]:.3f} on {device} vs {recalls['cpu']:.3f}"
    return (f"IVF256 nprobe 32: recall@10 {recalls[device]:.3f} built on {device}, "
            f"{recalls['cpu']:.3f} built on cpu")


def check_index_write(device: str, rng: np.random.Generator) -> str:
    from omnifer.pools.faiss_index import is_gpu_index, read_index, search, to_gpu, write_index

    import faiss

    base, queries = unit(rng, 20_000, 64), unit(rng, 100, 64)
    cpu_index = faiss.IndexFlatIP(64)
    cpu_index.add(base)
    index = to_gpu(cpu_index, gpus_for(device)) if device != "cpu" else cpu_index
    if device != "cpu":
        assert index is not None and is_gpu_index(index), "the index did not move to the GPU"
    with tempfile.TemporaryDirectory() as tmp:
        write_index(index, tmp, factory="Flat", count=len(base), dim=64)
        back, sidecar = read_index(tmp)
    assert not is_gpu_index(back) and back.ntotal == len(base)
    assert np.array_equal(search(back, queries, 5)[1], search(cpu_index, queries, 5)[1])
    return f"a {'GPU' if device != 'cpu' else 'CPU'} index written and read back as a CPU index"


def tiny_model(folder: Path) -> Path:
    import torch

    from omnifer.models import ModelConfig, build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet18", input_size=112), seed=0)
    return save_checkpoint(model, folder / "model")


def check_fp16_embedding(device: str, rng: np.random.Generator) -> str:
    from omnifer.models.embedder import Embedder

    if device == "cpu":
        raise Skip("fp16 embedding runs on a GPU only")
    images = rng.integers(0, 256, (256, 112, 112, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = tiny_model(Path(tmp))
        half = Embedder(path, device=device, batch_size=64)(images).astype(np.float32)
        full = Embedder(path, device="cpu", batch_size=64)(images).astype(np.float32)
    cos = (half * full).sum(1) / (np.linalg.norm(half, axis=1) * np.linalg.norm(full, axis=1))
    assert cos.min() >= 0.999, f"fp16 vs fp32 embeddings: lowest cosine {cos.min():.5f}"
    return f"resnet18 @ 112 px, 256 crops: cosine fp16 vs fp32 >= {cos.min():.5f}"


def check_amp_training(device: str, rng: np.random.Generator) -> str:
    from omnifer.data import read_labeled
    from omnifer.synth import generate
    from omnifer.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        out = generate(Path(tmp) / "data", preset="tiny", seed=0, size=48)
        labeled = read_labeled(out.labeled_toml)
        config = TrainConfig(backbone="resnet18", input_size=64, epochs=6, batch_size=16,
                             lr=1e-3, patience=0, val_fraction=0.2, device=device)
        result = train(labeled, Path(tmp) / "run", config=config, cache_dir=Path(tmp) / "cache")
    losses = [e["loss"]["total"] for e in result.history[0]]
    assert all(np.isfinite(losses)), f"non-finite training loss: {losses}"
    assert losses[-1] < losses[0], f"the loss did not fall: {losses}"
    amp = "AMP + channels-last" if device != "cpu" else "float32 (CPU stand-in)"
    return f"{amp}, 6 epochs of resnet18: loss {losses[0]:.3f} -> {losses[-1]:.3f}"


def check_mining_scorer(device: str, rng: np.random.Generator) -> str:
    from omnifer.mining.blocks import NumpyScorer, make_scorer

    labeled = unit(rng, 10_000, 256)
    block = unit(rng, 4_096, 256).astype(np.float16)
    scorer = make_scorer(labeled, device)
    if device != "cpu" and isinstance(scorer, NumpyScorer):
        raise AssertionError(f"make_scorer({device!r}) gave the numpy scorer")
    reference = NumpyScorer(labeled)
    cols = slice(0, 5_000)
    got, want = scorer.rowmax(block, cols), reference.rowmax(block, cols)
    keep = np.flatnonzero(want > np.quantile(want, 0.9))
    assert np.allclose(got, want, atol=1e-5), f"row maxima differ by {abs(got - want).max():.2e}"
    assert np.allclose(scorer.take(keep), reference.take(keep), atol=1e-5)
    return (f"{type(scorer).__name__} vs numpy, 4,096 x 10,000: row maxima within "
            f"{abs(got - want).max():.1e}")


def check_ddp(device: str, rng: np.random.Generator) -> str:
    import torch

    if device == "cpu" or torch.cuda.device_count() < 2:
        raise Skip("needs two GPUs")
    import json
    import subprocess

    from safetensors.torch import load_file

    from omnifer.synth import generate

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = generate(root / "synth", preset="tiny", seed=0, size=48).labeled_toml
        (root / "train.toml").write_text("[train]\ndropout = 0.0\n")
        weights = []
        for n in (1, 2):
            subprocess.run([sys.executable, "-m", "omnifer", "-q", "-w", str(root / f"ws{n}"),
                            "train", "--data", str(data), "--config", str(root / "train.toml"),
                            "--backbone", "convnet", "--size", "32", "--epochs", "3",
                            "--batch-size", "8", "--lr", "1e-4", "--device", "cuda",
                            "--nproc-per-node", str(n)], check=True)
            (run,) = (root / f"ws{n}" / ".omnifer" / "runs" / "train").iterdir()
            assert json.loads((run / "manifest.json").read_text())["status"] == "complete"
            weights.append(load_file(run / "members" / "0" / "model" / "model.safetensors"))
    a, b = weights
    diff = (sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in a)
            / sum(float((a[k].double() ** 2).sum()) for k in a)) ** 0.5
    assert diff < 1e-2, f"2 GPUs' weights differ from 1 GPU's by {diff:.1e} (relative L2)"
    return f"omnifer train on 2 GPUs (NCCL) against 1 GPU: weights within {diff:.1e} (relative L2)"


CHECKS = [("faiss flat", check_faiss_flat), ("faiss ivf", check_faiss_ivf),
          ("index gpu->cpu write", check_index_write), ("fp16 embedding", check_fp16_embedding),
          ("amp training", check_amp_training), ("mining scorer", check_mining_scorer),
          ("ddp 2 gpus", check_ddp)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (a stand-in)")
    parser.add_argument("--only", default=None, help="comma list of check names to run")
    args = parser.parse_args(argv)
    import torch

    only = set(args.only.split(",")) if args.only else None
    if args.device != "cpu" and not torch.cuda.is_available():  # a CPU-only machine
        why = (f"torch sees no CUDA device for --device {args.device}; run on a GPU machine "
               "(or --device cpu for the CPU stand-in)")
        titles = [t for t, _ in CHECKS if not only or t in only]
        for title in titles:
            print(f"SKIP {title}: {why}")
        print(f"0 passed, 0 failed, {len(titles)} skipped")
        print("gpu check: PASS (nothing ran on a GPU)")
        return 0
    name = torch.cuda.get_device_name(0) if args.device != "cpu" else "cpu"
    print(f"device: {name}; torch {torch.__version__}")
    failed = passed = skipped = 0
    for title, check in CHECKS:
        if only and title not in only:
            continue
        t0 = time.perf_counter()
        try:
            line = check(args.device, np.random.default_rng(0))
            status, passed = "PASS", passed + 1
        except Skip as why:
            line, status, skipped = str(why), "SKIP", skipped + 1
        except Exception as exc:  # a failed check: report it and go on with the others
            last = traceback.extract_tb(exc.__traceback__)[-1]
            line = f"{type(exc).__name__}: {exc} ({Path(last.filename).name}:{last.lineno})"
            status, failed = "FAIL", failed + 1
        print(f"{status} {title}: {line} ({time.perf_counter() - t0:.1f} s)", flush=True)
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    print(f"gpu check: {'FAIL' if failed else 'PASS'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
