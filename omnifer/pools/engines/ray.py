"""The ray engine: the local engine's work, run in Ray Data actors on a Ray cluster.

:func:`ray_chunks` cuts a list of pool keys into chunks and embeds them with
``Dataset.map_batches`` over a pool of actors (:class:`ChunkEmbedder`). Each actor opens the
pool source, the face detector and the :class:`~omnifer.models.embedder.Embedder` once, then
turns one chunk of keys into the chunk's rows and float16 embeddings, exactly as the local engine
does. One actor per GPU when the cluster has GPUs (and the device is not ``cpu``), else
``workers`` CPU actors. Shard writing, duplicate detection and counting stay on the driver.

The driver streams the results and hands them back in chunk order, holding only the chunks
that finished ahead of the next one in order (at most one shard of keys per call). Crops stay
on the actors unless asked for.
"""

from __future__ import annotations

import atexit
import io
import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from omnifer.errors import OmniferError
from omnifer.pools.chunks import CHUNK, Chunk, make_detector, read_chunk
from omnifer.pools.embed_config import EmbedConfig
from omnifer.pools.source import PoolSource


def ray_chunks(source: PoolSource, keys: list[str], *, config: EmbedConfig, workers: int = 1,
               chunk: int = CHUNK, with_images: bool = False
               ) -> Iterator[tuple[Chunk, np.ndarray]]:
    """``(Chunk, float16 embeddings [n, D])`` of ``keys[i:i + chunk]`` for each ``i``, in order.

    ``Chunk.images`` holds the crops when ``with_images``; otherwise it is uint8 [n, 0, 0, 3]
    (one entry per crop, no pixels), so that crops are not sent back to the driver.
    """
    if not keys:
        return
    ray = _connect(workers)
    import ray.data

    items = [{"index": i, "keys": list(keys[s:s + chunk])}
             for i, s in enumerate(range(0, len(keys), chunk))]
    gpus = int(ray.cluster_resources().get("GPU", 0)) if config.device != "cpu" else 0
    actors = ray.data.ActorPoolStrategy(size=gpus or max(int(workers), 1))
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        ChunkEmbedder, fn_constructor_args=(source, config, bool(gpus), with_images),
        batch_size=1, batch_format="numpy", compute=actors,
        **({"num_gpus": 1} if gpus else {"num_cpus": 1}))
    context = getattr(ds, "context", None)
    if context is not None:
        context.enable_progress_bars = False
    ahead: dict[int, dict[str, Any]] = {}  # finished before the next chunk in order
    following = 0
    for row in ds.iter_rows():
        ahead[int(row["index"])] = row
        while following in ahead:
            yield _unpack(ahead.pop(following))
            following += 1
    if following != len(items):
        raise RuntimeError(f"Ray returned {following} of {len(items)} chunks")


class ChunkEmbedder:
    """A Ray Data actor: a batch of ``{index, keys}`` rows -> rows of read and embedded chunks."""

    def __init__(self, source: PoolSource, config: EmbedConfig, gpu: bool = False,
                 with_images: bool = False) -> None:
        from omnifer.models.embedder import Embedder

        self.source, self.config, self.with_images = source, config, with_images
        self.detector = make_detector(config)
        device = "cuda" if gpu else config.device  # the actor sees its own GPU as cuda:0
        self.embedder = Embedder(config.model, device=device, batch_size=config.batch_size)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, list[Any]] = {"index": [], "meta": [], "embeddings": [], "images": []}
        for index, keys in zip(batch["index"], batch["keys"]):
            got = read_chunk(self.source, [str(k) for k in keys], size=self.config.input_size,
                             detector=self.detector)
            out["index"].append(int(index))
            out["meta"].append(json.dumps({"rows": got.rows, "skipped": got.skipped}))
            out["embeddings"].append(_to_bytes(self.embedder(got.images)))
            out["images"].append(_to_bytes(got.images if self.with_images
                                           else got.images[:, :0, :0]))
        return {"index": np.array(out["index"], np.int64),
                "meta": np.array(out["meta"], object),
                "embeddings": np.array(out["embeddings"], object),
                "images": np.array(out["images"], object)}


def _unpack(row: dict[str, Any]) -> tuple[Chunk, np.ndarray]:
    meta = json.loads(row["meta"])
    images = _from_bytes(row["images"])
    return Chunk(images, meta["rows"], meta["skipped"]), _from_bytes(row["embeddings"])


def _to_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _from_bytes(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _connect(workers: int) -> Any:
    """The ``ray`` module, connected to the running instance or to RAY_ADDRESS's cluster, else
    to a local instance for ``workers`` actors, started once and shut down at exit."""
    try:
        import ray
    except ImportError:
        raise OmniferError(
            "the ray engine needs Ray, which is not installed; install the ray extra: "
            "pip install 'omnifer[ray]'"
        ) from None
    if ray.is_initialized():
        return ray
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False, ignore_reinit_error=True)
    else:
        ray.init(num_cpus=max(int(workers), 1) + 1, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)
    atexit.register(ray.shutdown)
    return ray
