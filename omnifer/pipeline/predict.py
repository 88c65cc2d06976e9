"""``predict``: a trained model (or ensemble) on new images, folders of them and videos.

Inputs are read by the pool sources (``omnifer.pools``): an image file, a folder tree of images
and/or videos, a video (frames sampled at ``fps``) or any other pool file. Chunks of items are
read, decoded (and, with ``detect``, their faces detected and aligned) by
``omnifer.pools.chunks.read_chunk`` in a few threads while the model runs on the faces read so
far. Nothing is recorded in the workspace; the table is returned and, with ``output``, written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omnifer.errors import OmniferError
from omnifer.pipeline import resolve
from omnifer.pipeline.progress import Progress, bar
from omnifer.workspace import Run, Workspace

log = logging.getLogger(__name__)

#: Output formats by file suffix.
SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".json": "json"}
#: Chunks each reading thread may have read ahead of the model.
READ_AHEAD = 4
#: Reading threads (one with face detection, whose detector they would share).
MAX_READERS = 4


@dataclass(frozen=True)
class PredictResult:
    """What :func:`predict` found: one table row per face, and how the inputs were read."""

    table: Any  #: pandas DataFrame, one row per face
    counts: dict[str, int]  #: images (read), faces (rows), skipped (unreadable), no_face
    output: Path | None  #: the file written, if any
    seconds: float
    model: Path = Path()  #: the train run, generation or checkpoint folder that predicted
    members: int = 1  #: models whose mean predicted (ensemble members)


@dataclass
class Input:
    """One input as a pool source and the keys to read from it."""

    given: str  #: the path as the caller wrote it
    source: Any  #: ``omnifer.pools.source.PoolSource``
    keys: list[str]
    kind: str  #: image (files named one by one), folder, video, or another pool source
    names: dict[str, str] = field(default_factory=dict)  #: image files: key -> path as given

    def where(self, key: str) -> tuple[str, float | None]:
        """The file (or pool item) a key stands for, and its time in a video (seconds)."""
        if self.kind == "image":
            return self.names[key], None
        if self.kind == "folder":
            return os.path.join(self.given, key), None
        if self.kind == "video":
            name, _, ms = key.rpartition("@")
            path = self.given if os.path.isfile(self.given) else os.path.join(self.given, name)
            return path, int(ms) / 1000.0
        return f"{self.given}::{key}", None


def predict(workspace: Any = None, config: Any = None, *, model: Any = None,
            inputs: Sequence[Any] = (), output: Any = None,
            progress: Progress | None = None) -> PredictResult:
    """Expression probabilities (temperature-calibrated), the predicted expression, valence,
    arousal, AU probabilities and decisions, uncertainty and out-of-distribution scores of
    every face in ``inputs`` (image files, folders, videos) by ``model`` (a train run, every
    member as an ensemble; ``RUN@k`` for one member; or a checkpoint folder; default: the
    latest train run). With ``output``, also writes the table (CSV, Parquet or JSON)."""
    import numpy as np

    from omnifer.data.badfiles import BadFiles
    from omnifer.device import resolve_device
    from omnifer.models import load_models
    from omnifer.train.predict_config import PredictConfig

    t0 = time.perf_counter()
    ws = resolve.workspace(workspace)
    config = config or PredictConfig()
    fmt = output_format(output, config.format)
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not inputs:
        raise OmniferError("no images given; pass image files, folders or videos, e.g. "
                           "omnifer predict RUN photos/")
    path = resolve.train_run(ws, model)
    device = resolve_device(config.device)
    models = load_models(path, device=device)
    sources, unlisted = open_inputs(inputs, config.fps)
    reference = reference_embeddings(ws, path, str(device), progress) if config.distance else None
    bad = BadFiles(config.on_bad_files, what="unreadable image",
                   fix="pass --on-bad-files skip to skip unreadable images and count them")
    counts = {"images": 0, "faces": 0, "skipped": 0, "no_face": 0}
    for item in unlisted:
        counts["skipped"] += 1
        bad.add(f"{item.key}: {item.error}")
    detector = make_detector(config)
    size = models[0].config.input_size
    block = config.batch_size
    parts: list[dict[str, Any]] = []
    where: list[tuple[int, str, dict[str, Any]]] = []
    pending: list[Any] = []
    total = sum(len(s.keys) for s in sources)
    chunks = read_chunks(sources, size=size, detector=detector)
    with bar(progress, "predicting", "img") as update, contextlib.closing(chunks):
        for i, keys, chunk in chunks:
            for s in chunk.skipped:
                counts["skipped" if s["status"] == "bad" else "no_face"] += 1
                if s["status"] == "bad":
                    bad.add(f"{sources[i].where(s['key'])[0]}: {s['reason']}")
            counts["images"] += len(keys) - sum(s["status"] == "bad" for s in chunk.skipped)
            where += [(i, r["key"], r) for r in chunk.rows]
            pending.append(chunk.images)
            while sum(map(len, pending)) >= block:
                images = np.concatenate(pending)
                parts.append(predict_block(models, images[:block], config, device, reference))
                pending = [images[block:]]
            update(counts["images"] + counts["skipped"], total + len(unlisted))
        if sum(map(len, pending)):
            parts.append(predict_block(models, np.concatenate(pending), config, device,
                                       reference))
    bad.close(", ".join(map(str, inputs)))
    counts["faces"] = len(where)
    if not where:
        raise nothing_read(inputs, counts, config)
    table = make_table(sources, where, parts, detect=config.detect is not None)
    if output is not None:
        output = write_table(table, Path(output), fmt)
    return PredictResult(table, counts, output, time.perf_counter() - t0, path, len(models))


# ---------------------------------------------------------------- inputs


def open_inputs(inputs: Sequence[Any], fps: float) -> tuple[list[Input], list[Any]]:
    """The pool sources of ``inputs`` (image files of one folder share one) and the entries
    their listing could not read."""
    from omnifer.pools import (IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, PoolItem, detect_source,
                               get_pool_source)
    from omnifer.pools.source import Scan, absolute, suffix

    out: list[Input] = []
    singles: dict[Path, Input] = {}
    kinds = f"images ({' '.join(IMAGE_EXTENSIONS)}) or videos ({' '.join(VIDEO_EXTENSIONS)})"
    for given in map(os.fspath, inputs):
        path = absolute(given)
        if not path.exists():
            raise OmniferError(f"{given} does not exist; pass image files, folders of images or "
                               "videos")
        if path.is_file() and suffix(path.name) in IMAGE_EXTENSIONS:
            entry = singles.get(path.parent)
            if entry is None:
                entry = singles[path.parent] = Input(
                    given, get_pool_source("folder")(path.parent), [], "image")
                out.append(entry)
            entry.keys.append(path.name)
            entry.names[path.name] = given
            continue
        found = []
        if path.is_dir():
            scan = Scan(path)
            found = [n for n in ("video", "folder") if get_pool_source(n).matches(path, scan)]
        if not found:
            try:
                found = [detect_source(path)]
            except OmniferError:
                what = "holds no" if path.is_dir() else "is none of the"
                raise OmniferError(f"{given} {what} {kinds}; pass a folder of images or videos, "
                                   "or the image and video files themselves") from None
        for name in found:
            src = get_pool_source(name)(path, **({"fps": fps} if name == "video" else {}))
            out.append(Input(given, src, src.keys(), name))
    return out, [PoolItem(os.path.join(entry.given, item.key), None, item.error)
                 for entry in out if entry.kind != "image" for item in entry.source.unlisted()]


def make_detector(config: Any) -> Any:
    """The face detector ``config.detect`` names, or None for face crops."""
    if config.detect is None:
        return None
    from omnifer.faces import RetinaFaceDetector

    return RetinaFaceDetector(device="cpu" if config.device == "cpu" else "auto")


def read_chunks(sources: Sequence[Input], *, size: int, detector: Any
                ) -> Iterator[tuple[int, list[str], Any]]:
    """``(input index, keys, Chunk)`` of every input in order, read by a few threads (each
    with its own copy of a source) ahead of the caller."""
    import copy
    import threading
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from omnifer.pools.chunks import CHUNK, read_chunk

    tasks = [(i, s.keys[j:j + CHUNK]) for i, s in enumerate(sources)
             for j in range(0, len(s.keys), CHUNK)]
    local = threading.local()

    def work(task: tuple[int, list[str]]) -> tuple[int, list[str], Any]:
        i, keys = task
        mine = local.__dict__.setdefault("sources", {})
        if i not in mine:
            mine[i] = copy.copy(sources[i].source)
        return i, keys, read_chunk(mine[i], keys, size=size, detector=detector)

    workers = 1 if detector is not None else max(1, min(MAX_READERS, os.cpu_count() or 1))
    pool = ThreadPoolExecutor(workers, thread_name_prefix="omnifer-read")
    pending: deque[Any] = deque()
    try:
        for task in tasks:
            pending.append(pool.submit(work, task))
            if len(pending) >= READ_AHEAD * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def nothing_read(inputs: Sequence[Any], counts: dict[str, int], config: Any) -> OmniferError:
    named = ", ".join(map(str, inputs))
    if counts["images"] == 0:
        return OmniferError(f"no readable image in {named} ({counts['skipped']} unreadable "
                            "skipped); pass image files, folders of images or videos")
    return OmniferError(f"no face found in the {counts['images']} images of {named}; check that "
                        "they show faces" + (", or leave out --detect for face crops"
                                             if config.detect else ""))


# ---------------------------------------------------------------- the model


def predict_block(models: Sequence[Any], images: Any, config: Any, device: Any,
                  reference: Any) -> dict[str, Any]:
    """The output columns (arrays) of the ensemble's prediction on uint8 face crops."""
    import numpy as np

    from omnifer.data.batches import BatchMaker
    from omnifer.models.inference import predict_models
    from omnifer.train.evaluate import prediction_columns

    cfg = models[0].config
    maker = BatchMaker(images, mean=cfg.mean, std=cfg.std, device=device)
    pred = predict_models(models, maker, np.arange(len(images)), batch_size=config.batch_size,
                          mc_passes=config.mc_dropout, mc_rate=config.mc_rate)
    return prediction_columns(pred, cfg, reference)


def reference_embeddings(ws: Workspace, path: Path, device: str,
                         progress: Progress | None) -> Any:
    """The training set's embeddings by the first member (for the distance score), or None
    with one warning when the training data is not known or cannot be read."""
    from omnifer.pipeline.embeddings import labeled_embeddings
    from omnifer.records import TrainRun

    run = train_run_of(path)
    data = run.config.get("data") if run is not None else None
    if not data:
        log.warning("the distance score is left out: %s is not part of a train run that "
                    "recorded its training data; pass a train run to get it", path)
        return None
    where = Workspace(run.root).locate(data[0])
    if not where.exists():
        log.warning("the distance score is left out: the training data %s is gone (moved or "
                    "deleted); restore it to get that score", where)
        return None
    try:
        labeled = resolve.read_data(ws, where, on_bad_files="skip")
        first = path if (path / "model.json").is_file() else (
            TrainRun.from_run(run).members[0] if path == run.path
            else path / "members" / "0" / "model")
        return labeled_embeddings(ws, labeled, first, device, progress=progress,
                                  what="training embeddings")
    except OmniferError as exc:
        log.warning("the distance score is left out: the training data %s cannot be read (%s); "
                    "restore it to get that score", where, exc)
        return None


def train_run_of(path: Path) -> Run | None:
    """The train run a model folder belongs to, or None."""
    for folder in (path, *path.parents):
        if (folder / "manifest.json").is_file():
            try:
                run = Run(folder)
            except OmniferError:
                return None
            return run if run.stage == "train" else None
    return None


# ---------------------------------------------------------------- the table


def make_table(sources: Sequence[Input], where: list[tuple[int, str, dict[str, Any]]],
               parts: list[dict[str, Any]], *, detect: bool) -> Any:
    """One row per face: where it came from, then the model's columns."""
    import numpy as np
    import pandas as pd

    places = [sources[i].where(key) for i, key, _ in where]
    ident: dict[str, Any] = {"source": [p for p, _ in places]}
    if any(s.kind == "video" for s in sources):
        times = np.array([np.nan if t is None else t for _, t in places])
        fps = [sources[i].source.options.get("fps", np.nan) for i, _, _ in where]
        ident["frame"] = pd.array(np.where(np.isnan(times), np.nan, np.round(times * fps)),
                                  dtype="Int64")
        ident["time"] = times
    if detect:
        boxes = np.array([r["box"] for _, _, r in where], np.float32)
        ident["face"] = np.array([r["face"] for _, _, r in where], np.int64)
        ident.update({k: boxes[:, j] for j, k in enumerate(("x1", "y1", "x2", "y2"))})
        ident["det_score"] = np.array([r["det_score"] for _, _, r in where], np.float32)
    model = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return pd.DataFrame({**ident, **model})


def output_format(output: Any, fmt: str | None) -> str | None:
    """The format to write ``output`` in: ``fmt``, else the file's suffix."""
    if output is None:
        return fmt
    fmt = fmt or SUFFIXES.get(Path(output).suffix.lower())
    if fmt is None:
        raise OmniferError(f"cannot tell the format of {output} from its suffix; name it .csv, "
                           ".parquet or .json, or pass --format csv, parquet or json")
    if fmt == "table":
        raise OmniferError("format table prints to the terminal; leave out --output, or write "
                           "--format csv, parquet or json to a file")
    return fmt


def write_table(table: Any, path: Path, fmt: str | None) -> Path:
    """``table`` as CSV, Parquet or JSON records at ``path``, written atomically."""
    from omnifer.artifacts import atomic_path

    with atomic_path(path) as tmp:
        if fmt == "csv":
            table.to_csv(tmp, index=False)
        elif fmt == "parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_json(tmp, orient="records", double_precision=15)
    return path
