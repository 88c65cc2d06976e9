"""The mined set as a sample table the trainer reads, with its provenance columns, and the
images of pools the trainer cannot open by path (archives, tables, videos, detected faces)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omnifer.data import LabeledSet
from omnifer.data.table import make_table
from omnifer.mining.mine import MineResult

#: Columns after the sample-table ones: why each face was mined.
PROVENANCE = ("key", "face", "label", "score", "margin", "votes", "neighbours",
              "neighbour_scores", "duplicate_of", "model_fingerprint", "index_fingerprint")
MAGIC = {b"\xff\xd8": ".jpg", b"\x89P": ".png", b"RI": ".webp", b"BM": ".bmp"}


def sample_ids(ids: pd.DataFrame) -> list[str]:
    """Content id of the image, with the face number when an image held several faces."""
    return [i if f == 0 else f"{i}-face{f}" for i, f in zip(ids["id"], ids["face"])]


def mined_table(result: MineResult, ids: pd.DataFrame, images: Sequence[str], *,
                classes: Sequence[str], aus: Sequence[str], labeled_ids: Sequence[str],
                model_fingerprint: str, index_fingerprint: str,
                epistemic: np.ndarray | None = None) -> tuple[LabeledSet, pd.DataFrame]:
    """The mined faces as a sample table (expression label, weight = score clipped to [0, 1])
    and their provenance columns (``PROVENANCE``), to save with ``LabeledSet.save(extra=)``.

    ``ids``: the index run's ids table (row i = pool row i); ``images``: one image reference
    per mined face, in ``result`` order; ``labeled_ids``: sample id of each labeled row;
    ``epistemic``: each face's epistemic uncertainty (``--max-uncertainty``), a last column."""
    rows = ids.iloc[result.rows].reset_index(drop=True)
    n = len(rows)
    nan = np.full(n, np.nan, np.float32)
    table = make_table(
        sample_id=sample_ids(rows), image=list(images), source="mined",
        expression=result.labels.astype(np.int64), valence=nan, arousal=nan,
        au={a: nan for a in aus}, weight=np.clip(result.scores, 0.0, 1.0),
    )
    labeled_ids = np.asarray(labeled_ids, dtype=object)
    extra = pd.DataFrame({
        "key": rows["key"].astype(str), "face": rows["face"].astype(np.int32),
        "label": [classes[c] for c in result.labels],
        "score": result.scores.astype(np.float32), "margin": result.margins.astype(np.float32),
        "votes": result.votes.astype(np.int32),
        "neighbours": [list(labeled_ids[r]) for r in result.neighbours],
        "neighbour_scores": [list(map(float, s)) for s in result.neighbour_scores],
        # sample id of the better-scored mined face this one nearly duplicates ("" : none)
        "duplicate_of": _duplicate_ids(result, rows),
        "model_fingerprint": model_fingerprint, "index_fingerprint": index_fingerprint,
    })
    if epistemic is not None:
        extra["epistemic"] = np.asarray(epistemic, np.float32)
    return LabeledSet(table=table, expressions=tuple(classes), aus=tuple(aus),
                      sources=("mined",)), extra


def _duplicate_ids(result: MineResult, rows: pd.DataFrame) -> list[str]:
    own = dict(zip(result.rows.tolist(), sample_ids(rows)))
    return [own[int(r)] if r >= 0 else "" for r in result.duplicate_of]


def export_images(source: Any, rows: pd.DataFrame, out_dir: str | Path, *, detected: bool,
                  progress: Callable[[int, int], None] | None = None,
                  chunk: int = 256) -> list[str]:
    """Image paths for the trainer, one per row of ``rows`` (key, face, landmarks, sample_id).

    Files of a folder pool are referenced where they are; anything else is written under
    ``out_dir``: the original bytes of a whole image, or a PNG of a detected face aligned from
    its stored landmarks (or of a decoded video frame).
    """
    from omnifer.artifacts import atomic_write_bytes

    if source.name == "folder" and not detected:
        return [str(source.path / k) for k in rows["key"]]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[str] = []
    for r, item in _items(source, rows, chunk, progress):
        data = item.data
        if detected or not isinstance(data, bytes):
            path = out_dir / f"{r.sample_id}.png"
            if not path.is_file():
                atomic_write_bytes(path, _png(_crop(item, r.landmarks if detected else None)))
        else:
            path = out_dir / f"{r.sample_id}{MAGIC.get(data[:2], '.img')}"
            if not path.is_file():
                atomic_write_bytes(path, data)
        paths.append(str(path))
    return paths


def face_hashes(source: Any, rows: pd.DataFrame, *, detected: bool,
                progress: Callable[[int, int], None] | None = None,
                chunk: int = 256) -> np.ndarray:
    """uint8 [n, HASH_BYTES]: the perceptual hash (``omnifer.mining.leaks``) of the face of
    each row of ``rows`` (key, face, landmarks): the aligned crop of a detected face, the whole
    decoded image otherwise."""
    from omnifer.mining.leaks import image_hashes

    return image_hashes(_crop(item, r.landmarks if detected else None)
                        for r, item in _items(source, rows, chunk, progress))


def face_crops(source: Any, rows: pd.DataFrame, *, detected: bool, size: int,
               progress: Callable[[int, int], None] | None = None,
               chunk: int = 256) -> Iterator[np.ndarray]:
    """uint8 ``[b, size, size, 3]`` batches of at most ``chunk`` faces of ``rows`` (key, face,
    landmarks), in order: the face as the index embedded it (the aligned crop of a detected
    face, the whole decoded image otherwise), resized to ``size``."""
    from omnifer.data.images import resize

    batch: list[np.ndarray] = []
    for r, item in _items(source, rows, chunk, progress):
        batch.append(resize(_crop(item, r.landmarks if detected else None), size))
        if len(batch) == chunk:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


def _items(source: Any, rows: pd.DataFrame, chunk: int,
           progress: Callable[[int, int], None] | None) -> Iterator[tuple[Any, Any]]:
    """(row of ``rows`` as a named tuple, its pool item), reading ``chunk`` rows at a time."""
    for start in range(0, len(rows), chunk):
        part = rows.iloc[start:start + chunk]
        items = {it.key: it for it in source.read(list(dict.fromkeys(part["key"])))}
        for r in part.itertuples():
            yield r, items[r.key]
        if progress:
            progress(min(start + chunk, len(rows)), len(rows))


def _crop(item: Any, landmarks: Any) -> np.ndarray:
    from omnifer.errors import OmniferError
    from omnifer.pools.chunks import decode

    image, reason = decode(item)
    if image is None:
        raise OmniferError(f"pool item {item.key} can no longer be read ({reason}); the pool "
                           "changed since it was indexed: index it again")
    if landmarks is None:
        return image
    from omnifer.faces import align_face

    return align_face(image, np.asarray(landmarks, np.float32).reshape(5, 2))


def _png(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()
