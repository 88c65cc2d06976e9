"""Image bytes: hashing + full decode check for readers, and THE decoder (:func:`decode_bytes`).

An image reference (the ``image`` column of a sample table) is either an absolute file path or
``<dataset dir>::<row>`` for a row of a ``datasets.Dataset.save_to_disk`` folder (with
``::<column>`` appended when that dataset has more than one ``Image`` column), or
``<file.parquet>::<row>[::<column>]`` for an image embedded in a Parquet file (the Hub layout;
column ``image`` unless named).
"""

from __future__ import annotations

import functools
import io
import os
import re
import threading
import warnings
from typing import Any

from omnifer.errors import one_line

#: File extensions the folder reader picks up (compared lower-case).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

_HF_REF = re.compile(r"^(?P<dir>.+)::(?P<row>\d+)(?:::(?P<col>[^:]+))?$")


def hf_ref(directory: str, row: int, column: str | None = None) -> str:
    """The image reference of row ``row`` of a saved ``datasets`` folder."""
    ref = f"{directory}::{row}"
    return f"{ref}::{column}" if column else ref


def parse_hf_ref(ref: str) -> tuple[str, int, str | None] | None:
    """``(dir, row, column)`` for an ``hf`` reference, ``None`` for a plain path."""
    m = _HF_REF.match(ref)
    if not m or os.path.isfile(ref):
        return None
    return m.group("dir"), int(m.group("row")), m.group("col")


def check_image(data: bytes) -> str | None:
    """Decode ``data`` fully once; return ``None`` if it is a readable image, else why not."""
    return decode_bytes(data)[1]


class Unreadable(str):
    """Stands in for image bytes that could not be fetched; the string is the reason."""


def hash_and_check(item: bytes | str) -> tuple[str | None, str | None]:
    """``(sample_id, None)`` for a good image, ``(None, reason)`` for a bad one.

    ``item`` is the image bytes, a file path to read them from, or :class:`Unreadable`.
    """
    from omnifer.artifacts import content_id

    if isinstance(item, Unreadable):
        return None, str(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
    else:
        try:
            with open(item, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return None, f"image file not found: {item}"
        except IsADirectoryError:
            return None, f"image path is a directory, not a file: {item}"
        except OSError as exc:
            return None, f"cannot read image file {item} ({one_line(exc)})"
    reason = check_image(data)
    if reason is not None:
        return None, reason
    return content_id(data), None


def to_rgb(im: Any) -> Any:
    """EXIF orientation applied, palette/grayscale/RGBA/CMYK turned into plain RGB."""
    from PIL import Image, ImageOps

    im = ImageOps.exif_transpose(im)
    if im.mode == "RGB":
        return im
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits before converting.
        import numpy as np

        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        arr = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    return im.convert("RGB")


def read_image_bytes(ref: str | os.PathLike) -> bytes:
    """The bytes of an image reference (file path or ``dir::row`` of a saved ``datasets``)."""
    ref = os.fspath(ref)
    parsed = parse_hf_ref(ref)
    if parsed is None:
        try:
            with open(ref, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            from omnifer.errors import OmniferError

            raise OmniferError(
                f"image file {ref} does not exist; it moved since the data was read — "
                "read the data again"
            ) from None
    if os.path.isfile(parsed[0]):  # <file.parquet>::<row>: an image embedded in Parquet
        return parquet_image_bytes(*parsed)
    return _hf_image_bytes(*parsed)


def decode_bytes(data: bytes) -> tuple[Any, str | None]:
    """THE decoder: RGB uint8 ``[H, W, 3]`` of encoded image bytes, or ``(None, why not)``.

    Every stage decodes through it (training, indexing, mining, distillation), so a labeled
    face and the same face in a pool give identical pixels. JPEGs go through libjpeg-turbo
    (torchvision, about 3x PIL) with EXIF orientation applied; other formats, and JPEGs it
    refuses, through PIL (:func:`to_rgb`).
    """
    import numpy as np

    if not data:
        return None, "image file is empty (0 bytes)"
    if data[:2] == b"\xff\xd8":
        image = _decode_jpeg(data)
        if image is not None:
            return image, None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return np.asarray(to_rgb(im)), None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types on bad data
        reason = re.sub(r"<[^>]* at 0x[0-9a-f]+>", "the bytes", one_line(exc))  # no addresses
        return None, f"cannot decode image ({reason})"


@functools.cache
def _torchvision_jpeg() -> Any:
    """torchvision's libjpeg-turbo decoder, or None where torchvision no longer has it."""
    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities",
                            category=DeprecationWarning)
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None
    return functools.partial(decode_jpeg, mode=ImageReadMode.RGB, apply_exif_orientation=True)


def _decode_jpeg(data: bytes) -> Any:
    """RGB uint8 of a JPEG with EXIF orientation applied, or None to let PIL decide."""
    import torch

    decoder = _torchvision_jpeg()
    if decoder is None:
        return None
    try:
        x = decoder(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    except RuntimeError:  # truncated, corrupt or unusual: PIL decodes it or says why not
        return None
    return x.permute(1, 2, 0).numpy()


def resize(image: Any, size: int) -> Any:
    """``image`` (uint8 [H, W, 3]) at ``size`` x ``size``, bilinear; unchanged when it is."""
    import numpy as np

    if image.shape[:2] == (size, size):
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def decode_image(ref: str | os.PathLike, size: int | None = None) -> Any:
    """RGB uint8 ``[H, W, 3]`` of an image reference (resized to ``size`` when given); a
    missing or undecodable image is a one-line error."""
    from omnifer.errors import OmniferError

    image, reason = decode_bytes(read_image_bytes(ref))
    if image is None:
        raise OmniferError(
            f"cannot decode image {os.fspath(ref)}: {reason}; check the file or read the data "
            "with --on-bad-files skip"
        )
    return image if size is None else resize(image, size)


def load_image(ref: str | os.PathLike) -> Any:
    """An image reference as an RGB ``PIL.Image`` (decoded by :func:`decode_image`)."""
    from PIL import Image

    return Image.fromarray(decode_image(ref))


# ---------------------------------------------------------------- hf datasets

_HF_LOCK = threading.Lock()


@functools.lru_cache(maxsize=32)
def _open_hf(directory: str) -> Any:
    """The saved dataset at ``directory`` with image decoding disabled (cached per process)."""
    from datasets import Image as HFImage
    from datasets import load_from_disk

    from omnifer.errors import OmniferError

    try:
        ds = load_from_disk(directory)
    except FileNotFoundError:
        raise OmniferError(
            f"no saved dataset at {directory}; it moved since the data was read — read it again"
        ) from None
    if not hasattr(ds, "features"):
        raise OmniferError(
            f"{directory} holds several splits ({', '.join(ds)}); point to one split folder, "
            f"e.g. {os.path.join(directory, next(iter(ds)))}"
        )
    for name, feat in ds.features.items():
        if isinstance(feat, HFImage) and feat.decode:
            ds = ds.cast_column(name, HFImage(decode=False))
    return ds


def clear_hf_cache() -> None:
    """Forget the saved datasets opened so far (call after a folder was written anew)."""
    _open_hf.cache_clear()


def image_columns(ds: Any) -> list[str]:
    from datasets import Image as HFImage

    return [name for name, feat in ds.features.items() if isinstance(feat, HFImage)]


def _hf_image_bytes(directory: str, row: int, column: str | None) -> bytes:
    from omnifer.errors import OmniferError

    with _HF_LOCK:
        ds = _open_hf(directory)
    if column is None:
        cols = image_columns(ds)
        column = "image" if "image" in cols else (cols[0] if cols else None)
        if column is None:
            raise OmniferError(f"saved dataset {directory} has no Image column")
    if not 0 <= row < len(ds):
        raise OmniferError(
            f"row {row} is outside the saved dataset {directory} ({len(ds)} rows); "
            "read the data again"
        )
    value = ds[row][column]
    return image_value_bytes(value, base=directory)


def image_value_bytes(value: Any, *, base: str) -> bytes:
    """The bytes of an undecoded ``datasets.Image`` value (``{"bytes", "path"}``)."""
    if value is None:
        raise FileNotFoundError("no image in this row")
    data = value.get("bytes")
    if data:
        return bytes(data)
    path = value.get("path")
    if not path:
        raise FileNotFoundError("no image in this row")
    if not os.path.isabs(path):
        path = os.path.join(base, path)
    with open(path, "rb") as fh:
        return fh.read()


# ---------------------------------------------------------------- images embedded in Parquet

_PARQUET_LOCK = threading.Lock()


@functools.lru_cache(maxsize=2)
def _parquet_column(path: str, column: str, mtime: float) -> Any:
    """The image column of one Parquet file (the last two files read stay in memory)."""
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=[column]).column(column)


def parquet_image_bytes(path: str, row: int, column: str | None = None) -> bytes:
    """The bytes of the image in row ``row`` of Parquet file ``path`` (a binary or
    ``{bytes, path}`` cell, as the Hub layout stores them)."""
    from omnifer.errors import OmniferError

    column = column or "image"
    try:
        with _PARQUET_LOCK:
            values = _parquet_column(path, column, os.path.getmtime(path))
    except (KeyError, OSError, ValueError) as exc:
        raise OmniferError(f"cannot read column {column!r} of {path} ({one_line(exc)}); read "
                           "the data again") from None
    if not 0 <= row < len(values):
        raise OmniferError(f"row {row} is outside {path} ({len(values)} rows); read the data "
                           "again")
    value = values[row].as_py()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    try:
        return image_value_bytes(value, base=os.path.dirname(path))
    except FileNotFoundError:
        raise OmniferError(f"row {row} of {path} holds no image") from None
