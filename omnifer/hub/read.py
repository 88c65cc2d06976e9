"""Hub dataset repos as local folders: ``hf://datasets/ORG/NAME[@REVISION]`` through
``huggingface_hub.snapshot_download`` and its cache. With ``HF_HUB_OFFLINE=1`` only the cache
is used; nothing is downloaded unless the user named a repo."""

from __future__ import annotations

from pathlib import Path

from omnifer.errors import OmniferError, one_line
from omnifer.hub.config import check_repo_id

PREFIX = "hf://datasets/"


def is_hub_ref(ref: object) -> bool:
    return isinstance(ref, str) and ref.startswith(PREFIX)


def snapshot(ref: str) -> Path:
    """The local folder of a Hub dataset repo (its data files and card)."""
    from huggingface_hub import snapshot_download

    name, _, revision = ref.removeprefix(PREFIX).partition("@")
    repo = check_repo_id(name)
    try:
        path = snapshot_download(repo, repo_type="dataset", revision=revision or None,
                                 allow_patterns=["README.md", "data/*"])
    except Exception as exc:  # offline without a cached copy, unknown repo, no access
        raise OmniferError(
            f"cannot get {ref} ({one_line(exc)}); check the name and your access (gated repos "
            "need `hf auth login`), or unset HF_HUB_OFFLINE to download it") from None
    return Path(path)
