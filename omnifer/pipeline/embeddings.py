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
    path = _cache_file(ws, data, model, mirrored=mirrored)
    norm_path = path.with_suffix(".norm.npy")
    if path.is_file() and norm_path.is_file():
        return np.load(path), np.load(norm_path)
    images, embedder = _images_and_model(ws, data, model, device, progress, what)
    step = -1 if mirrored else 1
    out = [embedder.features(np.ascontiguousarray(images[i:i + 1024, :, ::step]))
           for i in range(0, len(images), 1024)]
    emb = np.concatenate([e for e, _ in out] or [np.zeros((0, embedder.dim), np.float16)])
    norms = np.concatenate([n for _, n in out] or [np.zeros(0, np.float32)])
    _save(norm_path, norms)
    _save(path, emb)  # the embeddings last: they mark the entry complete
    return emb, norms


def labeled_maps(ws: Workspace, data: Any, model: Path, device: str, *,
                 progress: Progress | None = None) -> np.ndarray:
    """float16 ``[N, h, w]`` activation maps (``Embedder.activation_maps``) of ``data``'s
    images by the checkpoint at ``model``, cached beside their embeddings."""
    path = _cache_file(ws, data, model).with_suffix(".maps.npy")
    if path.is_file():
        return np.load(path)
    images, embedder = _images_and_model(ws, data, model, device, progress,
                                         "reading labeled faces")
    maps = [embedder.activation_maps(images[i:i + 1024]).astype(np.float16)
            for i in range(0, len(images), 1024)]
    _save(path, np.concatenate(maps) if maps else np.zeros((0, 0, 0), np.float16))
    return np.load(path)


def _cache_file(ws: Workspace, data: Any, model: Path, *, mirrored: bool = False) -> Path:
    """The cache entry (``.npy``) of ``data``'s images under the checkpoint at ``model``."""
    from omnifer.artifacts import fingerprint, path_fingerprint
    from omnifer.data.cache import cache_key
    from omnifer.models import read_model_config

    size = read_model_config(model).input_size
    parts = {"model": path_fingerprint(model / "model.safetensors"),
             "images": cache_key(data, size)}
    key = fingerprint({**parts, "mirrored": True} if mirrored else parts)
    return ws.cache_dir / "embeddings" / f"{key}.npy"


def _images_and_model(ws: Workspace, data: Any, model: Path, device: str,
                      progress: Progress | None, what: str) -> tuple[np.ndarray, Any]:
    """``data``'s decoded images at the model's input size and the model as an ``Embedder``."""
    from omnifer.data.cache import decoded_images
    from omnifer.models.embedder import Embedder

    embedder = Embedder(model, device=device, batch_size=64)
    with bar(progress, what, "img") as update:
        images = decoded_images(data, embedder.size, image_cache(ws), progress=update)
    return images, embedder


def _save(path: Path, array: np.ndarray) -> None:
    from omnifer.artifacts import atomic_write_npy

    atomic_write_npy(path, [array], shape=array.shape, dtype=array.dtype)
