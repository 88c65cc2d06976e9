"""Embedding a pool: decode (and optionally detect and align) in worker processes, embed with
the primitive model in batches, write resumable shards.

The work unit is a shard of up to ``shard_size`` pool keys. Keys already embedded (in a
finished shard of this run, or of an earlier run over the same pool with the same config)
are skipped, the rest are cut into new shards in listing order, so a killed run started
again writes exactly the shards an uninterrupted run would have written, and files added to
the pool later land in new shards of the next run.

A shard is ``shards/shard-NNNNN.parquet`` (one row per pool item or detected face: ``key``,
``id`` = content hash of the image bytes, ``face`` number, ``status`` = ok | duplicate | bad |
no_face, ``reason``, ``box``, ``landmarks``, ``det_score``, ``row``) plus
``shards/shard-NNNNN.npy`` (float16 embeddings of the ``ok`` rows, in order).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from omnifer.artifacts import ShardedWriter, atomic_path, fingerprint
from omnifer.data.images import decode_bytes, resize
from omnifer.errors import OmniferError
from omnifer.pools.sources import PoolItem, PoolSource, item_id

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
DETECTORS = ("retinaface",)
ON_BAD_FILES = ("error", "warn", "skip")
CHUNK = 64  #: pool items per worker task


@dataclass(frozen=True)
class EmbedConfig:
    """What decides the embeddings of a pool (its fingerprint guards resume and reuse)."""

    pool: str
    source: str
    model: str  #: checkpoint directory
    model_fingerprint: str
    source_options: dict[str, Any] = field(default_factory=dict)
    input_size: int = 112
    detect: str | None = None
    det_threshold: float = 0.5
    min_face: int = 20
    batch_size: int = 256
    shard_size: int = 8192
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.detect is not None and self.detect not in DETECTORS:
            raise OmniferError(
                f"unknown detector {self.detect!r}; use --detect {' or '.join(DETECTORS)}, or "
                "leave it out for pools of aligned crops"
            )
        for name, low in (("batch_size", 1), ("shard_size", 1), ("min_face", 1)):
            if int(getattr(self, name)) < low:
                raise OmniferError(f"{name} is {getattr(self, name)}; it must be at least {low}")
        if not 0.0 <= self.det_threshold <= 1.0:
            raise OmniferError(f"det_threshold is {self.det_threshold}; use a value in [0, 1]")


@dataclass
class Chunk:
    """What a worker hands back for a list of keys: crops, their rows, and what was skipped."""

    images: np.ndarray  #: uint8 [n, S, S, 3]
    rows: list[dict[str, Any]]  #: one per crop
    skipped: list[dict[str, Any]]  #: one per unreadable item or image without a face


@dataclass
class EmbedResult:
    shards: list[Path]  #: every shard table the pool's embeddings live in (inherited included)
    counts: dict[str, int]
    seconds: float
    bad: list[dict[str, str]]  #: the first bad items: key, reason


# ---------------------------------------------------------------- decoding (worker side)

def decode(item: PoolItem) -> tuple[np.ndarray | None, str | None]:
    """RGB uint8 [H, W, 3] of an item (through the one decoder), or why not."""
    if item.error is not None or item.data is None:
        return None, item.error or "no data"
    if isinstance(item.data, np.ndarray):
        return item.data, None
    return decode_bytes(item.data)


def read_chunk(source: PoolSource, keys: Sequence[str], *, size: int,
               detector: Any = None) -> Chunk:
    """Read, decode, (detect and align,) resize ``keys``; never raises for a bad item."""
    crops, rows, skipped = [], [], []
    for item in source.read(keys):
        image, reason = decode(item)
        sid = item_id(item.data) if item.data is not None else None
        if image is None:
            skipped.append({"key": item.key, "id": sid, "status": "bad", "reason": reason})
            continue
        if detector is None:
            crops.append(resize(image, size))
            rows.append({"key": item.key, "id": sid, "face": 0})
            continue
        from omnifer.faces import detect_and_align

        faces = detect_and_align(detector, image, size=112)
        if not faces:
            skipped.append({"key": item.key, "id": sid, "status": "no_face", "reason": None})
        for n, (face, crop) in enumerate(faces):
            crops.append(resize(crop, size))
            rows.append({"key": item.key, "id": sid, "face": n,
                         "box": [float(v) for v in face.box],
                         "landmarks": [float(v) for v in np.asarray(face.landmarks).ravel()],
                         "det_score": float(face.score)})
    images = np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
    return Chunk(images, rows, skipped)


class _Chunks:
    """A map-style dataset of chunks for a DataLoader (workers keep order)."""

    def __init__(self, source: PoolSource, chunks: list[list[str]], size: int,
                 detector: Any) -> None:
        self.source, self.chunks, self.size, self.detector = source, chunks, size, detector

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> Chunk:
        return read_chunk(self.source, self.chunks[i], size=self.size, detector=self.detector)


def make_detector(config: EmbedConfig) -> Any:
    if config.detect is None:
        return None
    from omnifer.faces import RetinaFaceDetector

    return RetinaFaceDetector(threshold=config.det_threshold, min_face=config.min_face,
                              device="cpu" if config.device == "cpu" else "auto")


# ---------------------------------------------------------------- the model side

class Embedder:
    """The primitive model as a function: uint8 crops [n, S, S, 3] -> float16 embeddings."""

    def __init__(self, model_path: str | Path, *, device: str = "auto",
                 batch_size: int = 256) -> None:
        import torch

        from omnifer.models import load_models, resolve_device

        self.device = resolve_device(device)
        self.model = load_models(model_path, device=self.device)[0].eval()
        cfg = self.model.config
        self.size, self.batch_size = cfg.input_size, batch_size
        self.half = self.device.type == "cuda"
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last).half()
        self.mean = torch.tensor(cfg.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.std, device=self.device).view(1, 3, 1, 1)

    @property
    def dim(self) -> int:
        return int(self.model.embedding_dim)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import torch

        out = np.zeros((len(images), self.dim), np.float16)
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                x = torch.from_numpy(np.array(images[start:start + self.batch_size]))
                x = x.to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
                x = (x - self.mean) / self.std
                if self.half:
                    x = x.half()
                emb = self.model(x)["embedding"].float()
                out[start:start + len(emb)] = emb.cpu().numpy()
        return out


# ---------------------------------------------------------------- the engine

def shard_table_columns(path: Path, columns: Sequence[str]) -> dict[str, list[Any]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=list(columns))
    return {c: table.column(c).to_pylist() for c in columns}


def embed_pool(source: PoolSource, out_dir: str | Path, *, config: EmbedConfig,
               inherited: Sequence[Path] = (), workers: int = 2, on_bad_files: str = "warn",
               engine: str = "local", progress: Progress | None = None) -> EmbedResult:
    """Embed every key of ``source`` not already in ``inherited`` shards or finished shards of
    ``out_dir``; returns all shard tables of the pool and the counts of this call."""
    if on_bad_files not in ON_BAD_FILES:
        raise OmniferError(f"on_bad_files is {on_bad_files!r}; use error, warn or skip")
    t0 = time.perf_counter()
    writer = ShardedWriter(Path(out_dir) / "shards", config_fingerprint=fingerprint(asdict(config)))
    keys = source.keys()
    done, seen = set(), set()
    for path in [*inherited, *writer.shard_paths()]:
        cols = shard_table_columns(path, ["key", "id", "status"])
        done.update(cols["key"])
        seen.update(i for i, s in zip(cols["id"], cols["status"]) if s == "ok")
    todo = [k for k in keys if k not in done]
    start = (max(writer.completed) + 1) if writer.completed else 0
    shards = [todo[i:i + config.shard_size] for i in range(0, len(todo), config.shard_size)]
    counts = {"items": 0, "faces": 0, "bad": 0, "no_face": 0, "duplicates": 0,
              "reused": len(keys) - len(todo)}
    bad: list[dict[str, str]] = []
    run = _local_chunks if engine == "local" else _ray_chunks
    embedder = None
    for j, shard_keys in enumerate(shards):
        if embedder is None and engine == "local":
            embedder = Embedder(config.model, device=config.device, batch_size=config.batch_size)
        rows, embeddings, pending = [], [], []
        for chunk, emb in run(source, shard_keys, config=config, workers=workers,
                              embedder=embedder):
            for s in chunk.skipped:
                counts[s["status"]] += 1
                if s["status"] == "bad":
                    _bad_item(s, on_bad_files, bad)
            keep = _first_seen(chunk.rows, seen)
            counts["duplicates"] += keep.count(False)
            counts["faces"] += keep.count(True)
            if emb is None:  # the local engine embeds here, duplicates left out
                pending.append(chunk.images[np.flatnonzero(keep)])
                if sum(map(len, pending)) >= config.batch_size:
                    embeddings.append(embedder(np.concatenate(pending)))
                    pending = []
            else:
                embeddings.append(emb[np.flatnonzero(keep)])
            rows += chunk.rows + chunk.skipped
            counts["items"] += len({r["key"] for r in chunk.rows + chunk.skipped})
            if progress:
                progress(counts["reused"] + counts["items"], len(keys))
        if pending:
            embeddings.append(embedder(np.concatenate(pending)))
        _write_shard(writer, start + j, rows, embeddings)
    return EmbedResult([*inherited, *writer.shard_paths()], counts,
                       time.perf_counter() - t0, bad)


def _first_seen(rows: list[dict[str, Any]], seen: set[str]) -> list[bool]:
    """Mark rows ok or duplicate (an image whose bytes an earlier key already had)."""
    owner: dict[str, str] = {}
    keep = []
    for r in rows:
        first = r["id"] not in seen and owner.setdefault(r["id"], r["key"]) == r["key"]
        r["status"] = "ok" if first else "duplicate"
        keep.append(first)
    seen.update(owner)
    return keep


def _bad_item(s: dict[str, Any], policy: str, bad: list[dict[str, str]]) -> None:
    if policy == "error":
        raise OmniferError(
            f"cannot read pool item {s['key']}: {s['reason']}; pass --on-bad-files skip (or "
            "warn) to skip unreadable items and count them"
        )
    if policy == "warn" and len(bad) < 20:
        log.warning("skipping pool item %s: %s", s["key"], s["reason"])
    if len(bad) < 1000:
        bad.append({"key": s["key"], "reason": s["reason"]})


def _local_chunks(source: PoolSource, keys: list[str], *, config: EmbedConfig, workers: int,
                  embedder: Any) -> Iterator[tuple[Chunk, None]]:
    from torch.utils.data import DataLoader

    chunks = [keys[i:i + CHUNK] for i in range(0, len(keys), CHUNK)]
    data = _Chunks(source, chunks, config.input_size, make_detector(config))
    loader = DataLoader(data, batch_size=None, num_workers=workers, collate_fn=_identity,
                        prefetch_factor=4 if workers else None)
    for chunk in loader:
        yield chunk, None


def _ray_chunks(source: PoolSource, keys: list[str], *, config: EmbedConfig, workers: int,
                embedder: Any) -> Iterator[tuple[Chunk, np.ndarray]]:
    from omnifer.pools.ray_engine import ray_chunks

    yield from ray_chunks(source, keys, config=config, workers=workers, chunk=CHUNK)


def _identity(x: Any) -> Any:
    return x


def _write_shard(writer: ShardedWriter, index: int, rows: list[dict[str, Any]],
                 embeddings: list[np.ndarray]) -> None:
    import pyarrow as pa

    emb = np.concatenate(embeddings) if embeddings else np.zeros((0, 0), np.float16)
    row, n = [], 0
    for r in rows:
        row.append(n if r["status"] == "ok" else -1)
        n += r["status"] == "ok"
    if n != len(emb):
        raise RuntimeError(f"shard {index}: {n} ok rows but {len(emb)} embeddings")
    table = pa.table({
        "key": pa.array([r["key"] for r in rows], pa.string()),
        "id": pa.array([r.get("id") for r in rows], pa.string()),
        "face": pa.array([r.get("face", -1) for r in rows], pa.int32()),
        "status": pa.array([r["status"] for r in rows], pa.string()),
        "reason": pa.array([r.get("reason") for r in rows], pa.string()),
        "box": pa.array([r.get("box") for r in rows], pa.list_(pa.float32())),
        "landmarks": pa.array([r.get("landmarks") for r in rows], pa.list_(pa.float32())),
        "det_score": pa.array([r.get("det_score") for r in rows], pa.float32()),
        "row": pa.array(row, pa.int64()),
    })
    with atomic_path(writer.path(index).with_suffix(".npy")) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, emb)
    writer.write_table(index, table)  # marks the shard complete
