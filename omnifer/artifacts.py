"""Artifacts: atomic writes, content ids, fingerprints and a resumable sharded writer."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import math
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from omnifer.errors import ConfigMismatchError, OmniferError, one_line

#: Packages whose versions every manifest records.
TRACKED_PACKAGES = (
    "numpy", "pandas", "pyarrow", "torch", "torchvision", "faiss-cpu", "datasets",
    "huggingface_hub", "pillow", "safetensors",
)


# ---------------------------------------------------------------- atomic writes

@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only on success.

    A crash or exception leaves ``path`` as it was (absent or the previous version). The file
    gets the permissions an ordinary ``open`` would give (``0o666`` less the umask), and an
    ``OSError`` without a file name (a full disk while writing) is given ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~current_umask())
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        if exc.errno == errno.ENOSPC:
            raise OmniferError(
                f"no space left on device in {path.parent} (writing {path.name}); free space "
                "there and run the same command again to resume") from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def atomic_write_npy(path: str | os.PathLike, parts: Iterable[Any], *, shape: tuple[int, ...],
                     dtype: Any) -> Path:
    """Write an ``.npy`` array of ``shape`` from its consecutive row blocks ``parts``.

    Space is reserved first (``posix_fallocate``) and rows go out with ordinary writes, never
    through a memory map, so a full disk is an error naming the folder instead of a SIGBUS.
    """
    import numpy as np

    dtype = np.dtype(dtype)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
              "shape": tuple(int(n) for n in shape)}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        size = fh.tell() + math.prod(header["shape"]) * dtype.itemsize
        if hasattr(os, "posix_fallocate") and size > fh.tell():
            try:
                os.posix_fallocate(fh.fileno(), 0, size)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise
        for part in parts:
            fh.write(np.ascontiguousarray(part, dtype=dtype).tobytes())
        if fh.tell() != size:
            raise RuntimeError(f"{path}: wrote {fh.tell()} of {size} bytes")
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json_text(obj) + "\n")


def json_text(obj: Any) -> str:
    """``obj`` as strict JSON (``NaN`` and infinities become ``null``)."""
    return json.dumps(to_jsonable(obj), indent=2, sort_keys=True, allow_nan=False)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise OmniferError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OmniferError(f"{path} is not valid JSON ({exc}); delete it or restore it") from None


def to_jsonable(obj: Any) -> Any:
    """Turn dataclasses, paths, tuples and numpy scalars into plain JSON values; a non-finite
    float (``NaN``, an infinity) becomes ``None``, which strict JSON can hold."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj) if isinstance(obj, (set, frozenset)) else obj
        return [to_jsonable(v) for v in items]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ---------------------------------------------------------------- ids and fingerprints

def content_id(data: bytes) -> str:
    """Stable sample id: a 128-bit BLAKE2b hash of the image bytes, as 32 hex digits."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def fingerprint(config: Any) -> str:
    """Fingerprint of a JSON-able config (dataclass, dict ...): order of keys does not matter."""
    text = json.dumps(to_jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def path_fingerprint(path: str | os.PathLike, *, full_hash_limit: int = 64 << 20) -> str:
    """Fingerprint of an input file or folder.

    Files up to ``full_hash_limit`` bytes are hashed whole; larger files by size, mtime and
    their first and last MiB. Folders by the sorted list of (relative path, size, mtime) of
    the files below them, so adding, removing or touching a file changes the fingerprint.
    """
    path = Path(path)
    h = hashlib.sha256()
    if path.is_file():
        st = path.stat()
        if st.st_size <= full_hash_limit:
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        else:
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            with open(path, "rb") as fh:
                h.update(fh.read(1 << 20))
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read(1 << 20))
    elif path.is_dir():
        for rel in walk_files(path, hidden=True):
            try:
                st = os.stat(path / rel)
            except OSError:  # removed since it was listed
                continue
            h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    else:
        raise OmniferError(f"input {path} does not exist; check the path")
    return h.hexdigest()[:16]


def walk_files(root: str | os.PathLike, *, skipped: list[tuple[str, str]] | None = None,
               hidden: bool = False) -> Iterator[str]:
    """Relative POSIX paths of the regular files below ``root``, each folder's files (sorted)
    before its subfolders (sorted); symlinks are followed, hidden names skipped unless ``hidden``.

    What cannot be read as a file is never yielded and never opened: a folder that cannot be
    listed, a name that is not UTF-8, a broken symlink, a symlink loop, a FIFO, socket or
    device. With ``skipped``, each is appended as ``(relative path, reason)``; a folder's path
    ends in ``/`` and a name that is not UTF-8 is shown with ``\\x..`` escapes.
    """
    note = skipped.append if skipped is not None else (lambda _: None)

    def visit(folder: str, prefix: str, parents: frozenset[tuple[int, int]]) -> Iterator[str]:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
            st = os.stat(folder)
        except OSError as exc:
            note((prefix or "./", f"folder cannot be read ({one_line(exc.strerror or exc)})"))
            return
        parents |= {(st.st_dev, st.st_ino)}
        folders = []
        for e in entries:
            if e.name.startswith(".") and not hidden:
                continue
            rel = prefix + e.name
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                shown = os.fsencode(rel).decode("utf-8", "backslashreplace")
                note((shown, "name is not UTF-8; rename it"))
                continue
            try:
                is_file, is_dir = e.is_file(), e.is_dir()
            except OSError:  # a symlink loop
                is_file = is_dir = False
            if is_file:
                yield rel
            elif is_dir:
                folders.append(e)
            else:
                note((rel, _not_a_file(e.path)))
        for e in folders:
            target = os.stat(e.path)
            if (target.st_dev, target.st_ino) in parents:
                note((prefix + e.name + "/", "symlink loop (links to a folder above it)"))
            else:
                yield from visit(e.path, prefix + e.name + "/", parents)

    yield from visit(os.fspath(root), "", frozenset())


def _not_a_file(path: str) -> str:
    """Why ``path``, which is neither a regular file nor a folder, cannot be read."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return "broken symlink (its target does not exist)"
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        return f"cannot be read ({one_line(exc.strerror or exc)})"
    kind = "FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device"
    return f"not a regular file (a {kind})"


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (absent packages are left out)."""
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


# ---------------------------------------------------------------- sharded writer

def shard_name(index: int, total: int | None = None, *, prefix: str = "shard",
               suffix: str = ".parquet") -> str:
    """``shard-00003.parquet`` or, when the total is known, ``shard-00003-of-00010.parquet``."""
    if total is None:
        return f"{prefix}-{index:05d}{suffix}"
    return f"{prefix}-{index:05d}-of-{total:05d}{suffix}"


class ShardedWriter:
    """Writes numbered shards into a folder and remembers which are complete.

    Progress lives in ``progress.json`` beside the shards together with the fingerprint of
    the config that produced them. Re-opening the folder with the same fingerprint resumes
    (``done(i)`` tells which shards to skip); a different fingerprint is refused, so a
    resume never mixes outputs made with different configs.
    """

    PROGRESS = "progress.json"

    def __init__(self, directory: str | os.PathLike, *, config_fingerprint: str,
                 prefix: str = "shard", suffix: str = ".parquet"):
        self.directory = Path(directory)
        self.fingerprint = config_fingerprint
        self.prefix, self.suffix = prefix, suffix
        self.directory.mkdir(parents=True, exist_ok=True)
        progress_file = self.directory / self.PROGRESS
        if progress_file.exists():
            state = read_json(progress_file)
            if state.get("fingerprint") != config_fingerprint:
                raise ConfigMismatchError(
                    f"{self.directory} holds shards made with config {state.get('fingerprint')}, "
                    f"not {config_fingerprint}; start a new run or restore the original config"
                )
            self._complete = {int(k): v for k, v in state.get("complete", {}).items()}
        else:
            self._complete = {}
            self._save()

    @property
    def completed(self) -> list[int]:
        return sorted(self._complete)

    def done(self, index: int) -> bool:
        """True when shard ``index`` was written completely (and its file is still there)."""
        return index in self._complete and self.path(index).exists()

    def path(self, index: int) -> Path:
        return self.directory / shard_name(index, prefix=self.prefix, suffix=self.suffix)

    def write_bytes(self, index: int, data: bytes, *, rows: int | None = None) -> Path:
        atomic_write_bytes(self.path(index), data)
        return self.mark_done(index, rows=rows)

    def write_table(self, index: int, table: Any) -> Path:
        """Write a pandas DataFrame or pyarrow Table as shard ``index`` (Parquet)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not isinstance(table, pa.Table):
            table = pa.Table.from_pandas(table, preserve_index=False)
        with atomic_path(self.path(index)) as tmp:
            pq.write_table(table, tmp)
        return self.mark_done(index, rows=table.num_rows)

    def mark_done(self, index: int, *, rows: int | None = None) -> Path:
        """Record shard ``index`` as complete (its file must already be in place)."""
        self._complete[int(index)] = {"rows": rows}
        self._save()
        return self.path(index)

    def shard_paths(self) -> list[Path]:
        return [self.path(i) for i in self.completed]

    def _save(self) -> None:
        atomic_write_json(self.directory / self.PROGRESS,
                          {"fingerprint": self.fingerprint, "complete": self._complete})
