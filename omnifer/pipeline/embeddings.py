"""Embeddings (and feature norms) of labeled images by one model, cached per model and image
list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from omnifer.pipeline.progress import Progress, bar
from omnifer.workspace import Workspace


def image_cache(ws: Workspace) -> Path:
    """Decoded images shared by every run of the workspace."""
    return ws.cache_dir / "images"


def labeled_embeddings(ws: Workspace, data: Any, model: Path, device: str, *,
                       progress: Progress | None = None, what: str = "embedding",
                       mirrored: bool = False) -> np.ndarray:
    """float16 ``[N, D]`` embeddings of ``data``'s images by the checkpoint at ``model`` (with
    ``mirrored``, of their mirror images)."""
    return labeled_features(ws, data, model, device, progress=progress, what=what,
                            mirrored=mirrored)[0]


def labeled_features(ws: Workspace, data: Any, model: Path, device: str, *,
                     progress: Progress | None = None, what: str = "embedding",
                     mirrored: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """:func:`labeled_embeddings` and the float32 ``[N]`` feature norms of the same images
    (``Embedder.features``)."""
    from omnifer.artifacts import atomic_path, fingerprint, path_fingerprint
    from omnifer.data.cache import cache_key, decoded_images
    from omnifer.models import read_model_config
    from omnifer.models.embedder import Embedder

    size = read_model_config(model).input_size
    parts = {"model": path_fingerprint(model / "model.safetensors"),
             "images": cache_key(data, size)}
    key = fingerprint({**parts, "mirrored": True} if mirrored else parts)
    path = ws.cache_dir / "embeddings" / f"{key}.npy"
    norm_path = path.with_suffix(".norm.npy")
    if path.is_file() and norm_path.is_file():
        return np.load(path), np.load(norm_path)
    with bar(progress, what, "img") as update:
        images = decoded_images(data, size, image_cache(ws), progress=update)
    embedder = Embedder(model, device=device, batch_size=64)
    step = -1 if mirrored else 1
    out = [embedder.features(np.ascontiguousarray(images[i:i + 1024, :, ::step]))
           for i in range(0, len(images), 1024)]
    emb = np.concatenate([e for e, _ in out] or [np.zeros((0, embedder.dim), np.float16)])
    norms = np.concatenate([n for _, n in out] or [np.zeros(0, np.float32)])
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, array in ((norm_path, norms), (path, emb)):  # the embeddings last
        with atomic_path(target) as tmp, open(tmp, "wb") as fh:
            np.save(fh, array)
    return emb, norms


def labeled_maps(ws: Workspace, data: Any, model: Path, device: str, *,
                 progress: Progress | None = None) -> np.ndarray:
    """float16 ``[N, h, w]`` activation maps (``Embedder.activation_maps``) of ``data``'s
    images by the checkpoint at ``model``, cached like their embeddings."""
    from omnifer.artifacts import atomic_path, fingerprint, path_fingerprint
    from omnifer.data.cache import cache_key, decoded_images
    from omnifer.models import read_model_config
    from omnifer.models.embedder import Embedder

    size = read_model_config(model).input_size
    key = fingerprint({"model": path_fingerprint(model / "model.safetensors"),
                       "images": cache_key(data, size), "maps": "activation-norm"})
    path = ws.cache_dir / "embeddings" / f"{key}.maps.npy"
    if path.is_file():
        return np.load(path)
    with bar(progress, "reading labeled faces", "img") as update:
        images = decoded_images(data, size, image_cache(ws), progress=update)
    embedder = Embedder(model, device=device, batch_size=64)
    maps = np.concatenate([embedder.activation_maps(images[i:i + 1024]).astype(np.float16)
                           for i in range(0, len(images), 1024)])
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, maps)
    return maps
