"""Image bytes: hashing + full decode check for readers, and :func:`load_image` for training.

An image reference (the ``image`` column of a sample table) is either an absolute file path or
``<dataset dir>::<row>`` for a row of a ``datasets.Dataset.save_to_disk`` folder (with
``::<column>`` appended when that dataset has more than one ``Image`` column).
"""

from __future__ import annotations

import functools
import io
import os
import re
import threading
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
    from PIL import Image

    if not data:
        return "image file is empty (0 bytes)"
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError ... on bad data
        return f"cannot decode image ({one_line(exc)})"
    return None


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


def load_image(ref: str | os.PathLike) -> Any:
    """Open an image reference as an RGB ``PIL.Image`` (file path or ``dir::row`` of ``hf``)."""
    from PIL import Image

    ref = os.fspath(ref)
    parsed = parse_hf_ref(ref)
    if parsed is None:
        try:
            with Image.open(ref) as im:
                im.load()
                return to_rgb(im)
        except FileNotFoundError:
            from omnifer.errors import OmniferError

            raise OmniferError(
                f"image file {ref} does not exist; it moved since the data was read — "
                "read the data again"
            ) from None
    directory, row, column = parsed
    data = _hf_image_bytes(directory, row, column)
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return to_rgb(im)


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
