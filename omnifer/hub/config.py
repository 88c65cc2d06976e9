"""``PublishConfig``: what decides a published dataset and where it goes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from omnifer.config import StageConfig
from omnifer.errors import OmniferError

GATED = ("manual", "auto")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]?i?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}


def check_repo_id(repo: str) -> str:
    """``repo`` when it is ``ORG/NAME`` (a ``hf://datasets/`` prefix is dropped)."""
    text = str(repo).strip().removeprefix("hf://datasets/")
    if not _REPO_ID.match(text) or text.endswith((".git", ".")) or ".." in text:
        raise OmniferError(f"--repo {repo!r} is not a Hub dataset id; write it as ORG/NAME "
                           "(letters, digits, - _ .), e.g. my-lab/fer-mined")
    return text


def parse_size(size: str | int) -> int:
    """Bytes of ``"500MB"``, ``"1GiB"``, ``"2000000"``."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        m = _SIZE.match(str(size))
        if not m or m.group(2).upper() not in _UNITS:
            raise OmniferError(f"--max-shard-size {size!r} is not a size; write e.g. 500MB, "
                               "1GB or 200MiB")
        value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value < 1:
        raise OmniferError(f"--max-shard-size {size!r} must be above 0; use e.g. 500MB")
    return value


@dataclass(frozen=True)
class PublishConfig(StageConfig):
    """What a ``publish`` run writes and where it uploads it."""

    section: ClassVar[str] = "publish"

    repo: str | None = None  #: ORG/NAME on the Hub (None: only --to-dir / --dry-run)
    private: bool = False
    gated: str | None = None  #: manual or auto: users request access
    license: str = "other"  #: a Hub license id, e.g. cc-by-nc-4.0
    revision: str = "main"  #: branch to commit to (created when missing)
    commit_message: str | None = None
    max_shard_size: str = "500MB"
    with_embeddings: bool = False  #: an ``embeddings`` config (float16, mined sets)
    with_index: bool = False  #: the pool's FAISS index and its sidecar (mined sets)
    as_references: bool = False  #: keys, labels and scores without pixels
    pretty_name: str | None = None

    def __post_init__(self) -> None:
        if self.repo is not None:
            object.__setattr__(self, "repo", check_repo_id(self.repo))
        if self.gated is not None and self.gated not in GATED:
            raise OmniferError(f"--gated {self.gated!r}; use manual or auto")
        parse_size(self.max_shard_size)
        if not str(self.license).strip() or not str(self.revision).strip():
            raise OmniferError("--license and --revision must not be empty; e.g. --license "
                               "cc-by-nc-4.0 --revision main")
        if self.as_references and (self.with_embeddings or self.with_index):
            raise OmniferError("--as-references publishes no pixels and no pool artifacts; drop "
                               "--with-embeddings / --with-index")

    @property
    def shard_bytes(self) -> int:
        return parse_size(self.max_shard_size)
