"""MXNet / InsightFace RecordIO (``train.rec`` + ``train.idx``), read and written without mxnet.

Layout, as dmlc-core writes it:

- ``.idx``: text lines ``index<TAB>offset``, the byte offset of each record in the ``.rec``.
- ``.rec``: each record is one or more chunks. A chunk is ``uint32 magic`` (``0xced7230a``),
  ``uint32 lrecord`` (``cflag = lrecord >> 29``, ``length = lrecord & (2**29 - 1)``), then
  ``length`` payload bytes padded with zeros to a multiple of 4. ``cflag`` 0 is a whole record;
  1, 2 and 3 are the first, middle and last chunk of a record that was split. The writer splits
  a record wherever the magic number appears at a 4-byte aligned offset of the payload, and drops
  those four bytes; the reader puts the magic number back between consecutive chunks.
- A record payload is an ``IRHeader`` (``<IfQQ``: flag, label, id, id2; 24 bytes); when
  ``flag > 0``, ``flag`` float32 labels follow (and the header's label is unused); the image
  bytes are the rest.
- In InsightFace datasets (``faces_emore``: MS1MV2/MS1MV3), record 0 is a meta record: its
  labels are ``(1 + number of images, end of the identity records)``; images are records
  ``1 .. labels[0] - 1`` and the records after them hold one identity range each, no image.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
HEADER = struct.Struct("<IfQQ")
_CHUNK = struct.Struct("<II")
_LENGTH_MASK = (1 << 29) - 1


class RecordError(Exception):
    """A record that cannot be read (bad magic number, truncated chunk, bad header)."""


# ---------------------------------------------------------------- reading

def read_index(path: str | os.PathLike) -> list[tuple[int, int]]:
    """``(index, offset)`` pairs of a ``.idx`` file, sorted by index.

    Raises ``ValueError`` naming the first line that is not ``index<TAB>offset``.
    """
    pairs: list[tuple[int, int]] = []
    with open(path, encoding="ascii", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            fields = line.split()
            if not fields:
                continue
            try:
                index, offset = int(fields[0]), int(fields[1])
            except (ValueError, IndexError):
                raise ValueError(f"line {number} is {line.strip()[:60]!r}, "
                                 "not 'index<TAB>offset'") from None
            pairs.append((index, offset))
    pairs.sort()
    return pairs


def read_record(fh: BinaryIO, offset: int) -> bytes:
    """The payload of the record starting at ``offset``, its chunks joined."""
    fh.seek(offset)
    parts: list[bytes] = []
    first = True
    while True:
        where = fh.tell()
        head = fh.read(_CHUNK.size)
        if len(head) < _CHUNK.size:
            raise RecordError(f"record at offset {offset} is truncated (chunk header at {where})")
        magic, lrecord = _CHUNK.unpack(head)
        if magic != MAGIC:
            raise RecordError(f"no RecordIO magic number at offset {where} (found 0x{magic:08x})")
        cflag, length = lrecord >> 29, lrecord & _LENGTH_MASK
        if cflag > 3 or (first and cflag not in (0, 1)) or (not first and cflag not in (2, 3)):
            raise RecordError(f"chunk at offset {where} has continuation flag {cflag}, "
                              "out of sequence")
        data = fh.read(length)
        if len(data) < length:
            raise RecordError(f"record at offset {offset} is truncated "
                              f"({len(data)} of {length} bytes in the chunk at {where})")
        parts.append(data)
        if cflag in (0, 3):
            return b"".join(parts)
        parts.append(MAGIC_BYTES)  # the writer dropped it where it split the record
        fh.seek((-length) % 4, os.SEEK_CUR)
        first = False


def unpack_payload(payload: bytes) -> tuple[int, list[float], bytes]:
    """``(flag, labels, image bytes)`` of a record payload."""
    if len(payload) < HEADER.size:
        raise RecordError(f"record is {len(payload)} bytes, shorter than its "
                          f"{HEADER.size}-byte header")
    flag, label, _, _ = HEADER.unpack_from(payload)
    if flag == 0:
        return 0, [label], payload[HEADER.size:]
    end = HEADER.size + 4 * flag
    if len(payload) < end:
        raise RecordError(f"record header announces {flag} labels but the record is only "
                          f"{len(payload)} bytes")
    labels = list(struct.unpack_from(f"<{flag}f", payload, HEADER.size))
    return flag, labels, payload[end:]


# ---------------------------------------------------------------- writing

def pack_payload(image: bytes, label: float | Sequence[float], *, id: int = 0,  # noqa: A002
                 id2: int = 0) -> bytes:
    """A record payload: the header (with a label list when ``label`` is a sequence), the image."""
    if isinstance(label, (int, float)):
        return HEADER.pack(0, float(label), id, id2) + image
    labels = [float(v) for v in label]
    return (HEADER.pack(len(labels), 0.0, id, id2) + struct.pack(f"<{len(labels)}f", *labels)
            + image)


def encode_record(payload: bytes) -> bytes:
    """The chunks of one record, split at aligned magic numbers the way dmlc-core does."""
    out: list[bytes] = []
    start = 0
    aligned_end = len(payload) - len(payload) % 4
    i = payload.find(MAGIC_BYTES)
    while 0 <= i and i + 4 <= aligned_end:
        if i % 4:
            i = payload.find(MAGIC_BYTES, i + 1)
            continue
        out.append(_CHUNK.pack(MAGIC, ((1 if start == 0 else 2) << 29) | (i - start)))
        out.append(payload[start:i])
        start = i + 4
        i = payload.find(MAGIC_BYTES, start)
    out.append(_CHUNK.pack(MAGIC, ((3 if start else 0) << 29) | (len(payload) - start)))
    out.append(payload[start:])
    out.append(b"\0" * ((-len(payload)) % 4))
    return b"".join(out)


def write_recordio(
    path_prefix: str | os.PathLike,
    images: Sequence[bytes],
    labels: Sequence[float],
    *,
    with_meta: bool = True,
    identities: Sequence[tuple[int, int]] | None = None,
) -> tuple[Path, Path]:
    """Write ``<prefix>.rec`` and ``<prefix>.idx`` in the InsightFace layout; returns both paths.

    With ``with_meta`` record 0 is the meta record, images are records ``1..len(images)`` and
    one identity record per ``(start, end)`` range of image records follows (default: one per
    run of equal consecutive labels). Without it, records ``0..len(images)-1`` are the images.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    prefix = os.fspath(path_prefix)
    rec, idx = Path(prefix + ".rec"), Path(prefix + ".idx")
    records: list[bytes] = []
    if with_meta:
        if identities is None:
            identities = _label_runs(labels, first=1)
        n = len(images) + 1
        records.append(pack_payload(b"", [n, n + len(identities)]))
    first = len(records)
    records += [pack_payload(bytes(im), lab, id=first + i)
                for i, (im, lab) in enumerate(zip(images, labels))]
    if with_meta:
        records += [pack_payload(b"", [start, end]) for start, end in identities or ()]
    offset = 0
    with open(rec, "wb") as rfh, open(idx, "w", encoding="ascii") as ifh:
        for index, payload in enumerate(records):
            chunk = encode_record(payload)
            rfh.write(chunk)
            ifh.write(f"{index}\t{offset}\n")
            offset += len(chunk)
    return rec, idx


def _label_runs(labels: Sequence[float], *, first: int) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for i, lab in enumerate(labels):
        if i and lab == labels[i - 1]:
            runs[-1] = (runs[-1][0], first + i + 1)
        else:
            runs.append((first + i, first + i + 1))
    return runs
