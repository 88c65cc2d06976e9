"""One chunk of a split: sample, render and write its images, return its labels.

A chunk is the unit of work of :func:`omnifer.synth.generate` (and of its worker processes);
its randomness comes from its own stream, so the output does not depend on the worker count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omnifer.labels import EXPRESSIONS
from omnifer.synth.config import SynthConfig
from omnifer.synth.sampling import chunk_rng, render_rows, sample_rows


@dataclass(frozen=True)
class Chunk:
    """Samples ``start .. start + n`` of ``split``, the ``index``-th chunk of it."""

    out_dir: str
    split: str
    index: int
    start: int
    n: int
    seed: int
    config: SynthConfig
    identities: np.ndarray
    shifted: bool
    #: the given (possibly noisy) class of each sample of an ``expr`` chunk: the class folder it
    #: is written to (None: the true class; see ``omnifer.synth.label_noise``)
    given: np.ndarray | None = None


def image_path(split: str, idx: int, cls: int, config: SynthConfig) -> str:
    """Path of image ``idx`` of ``split`` relative to the output directory."""
    if split == "expr":
        return f"labeled/expr/{EXPRESSIONS[cls]}/expr_{idx:06d}.jpg"
    if split == "va":
        return f"labeled/va/images/va_{idx:06d}.jpg"
    if split == "au":
        return f"labeled/au/images/au_{idx:06d}.jpg"
    if split == "test":
        return f"test/images/{idx:06d}.jpg"
    if split == "pool":
        return f"pool/{idx // config.pool_folder_size:05d}/{idx:06d}.jpg"
    raise ValueError(split)


def write_image(path: Path, data: bytes) -> None:
    """Write an image via a temporary name and ``os.replace`` (no fsync: cheap per file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def run_chunk(chunk: Chunk) -> dict:
    """Render one chunk; write its files (all splits except ``multi``); return its labels."""
    config, split, n = chunk.config, chunk.split, chunk.n
    rng = chunk_rng(chunk.seed, split, chunk.index)
    rows = sample_rows(rng, n, config, split, chunk.start, chunk.identities, shifted=chunk.shifted)
    images = render_rows(rng, rows, chunk.identities, config.size, config, shifted=chunk.shifted)
    if split == "multi":
        rows["bytes"] = images
        # Which tasks each row carries: all three on a fraction, one or two otherwise.
        full = rng.random(n) < config.multi_full_fraction
        subsets = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], bool)
        pick = subsets[rng.integers(0, len(subsets), n)]
        rows["tasks"] = np.where(full[:, None], True, pick)
    else:
        if chunk.given is not None:
            rows["true_expression"] = rows["expression"]
            rows["expression"] = np.asarray(chunk.given, np.int64)
        paths = []
        for i, data in enumerate(images):
            rel = image_path(split, chunk.start + i, int(rows["expression"][i]), config)
            write_image(Path(chunk.out_dir) / rel, data)
            paths.append(rel)
        rows["file"] = paths
    rows["split"], rows["chunk"] = split, chunk.index
    return rows
