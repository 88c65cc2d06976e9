"""Uploading a published folder with ``huggingface_hub``: repo created (``exist_ok``), gating
set in the repo settings, data files committed in batches with ``upload_folder`` (files the
revision already holds with the same content are skipped, so a re-run after an interruption
uploads the rest), and the card last, so that an interrupted upload never shows a card that
disagrees with the shards. The token is whatever ``huggingface_hub`` finds (``HF_TOKEN``, the
login cache); omnifer never reads, passes or writes it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omnifer.errors import OmniferError, one_line

CARD = "README.md"
#: Data files per commit.
FILES_PER_COMMIT = 25


def make_api() -> Any:
    """An ``HfApi`` once a token is known; a one-line error saying where to put one."""
    from huggingface_hub import HfApi, get_token

    if not get_token():
        raise OmniferError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token "
                           "with write access), or publish with --to-dir DIR to write the folder "
                           "only")
    return HfApi()


def local_files(folder: Path) -> list[str]:
    """Files to upload, POSIX paths relative to ``folder``, card excluded, sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.name != CARD and ".cache" not in p.parts)


def same_content(path: Path, remote: Any) -> bool:
    """Whether a local file equals a remote one (LFS sha256, else the git blob id)."""
    if remote is None or getattr(remote, "size", None) != path.stat().st_size:
        return False
    data = path.read_bytes()
    lfs = getattr(remote, "lfs", None)
    if lfs is not None:
        sha = lfs["sha256"] if isinstance(lfs, dict) else lfs.sha256
        return hashlib.sha256(data).hexdigest() == sha
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    return blob == getattr(remote, "blob_id", None)


def upload(folder: str | Path, repo: str, *, api: Any = None, private: bool = False,
           gated: str | None = None, revision: str = "main", commit_message: str | None = None,
           files_per_commit: int = FILES_PER_COMMIT,
           progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Upload ``folder`` to the dataset repo ``repo``; returns the card commit's id and url and
    the files uploaded and skipped."""
    folder = Path(folder)
    if not (folder / CARD).is_file():
        raise OmniferError(f"{folder} has no {CARD}; publish with --to-dir first")
    api = api if api is not None else make_api()
    message = commit_message or f"Publish {folder.name} with omnifer"
    try:
        url = api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
        if gated:
            api.update_repo_settings(repo, repo_type="dataset", gated=gated)
        if revision != "main":
            api.create_branch(repo, repo_type="dataset", branch=revision, exist_ok=True)
        remote = {f.path: f for f in api.list_repo_tree(repo, repo_type="dataset",
                                                        revision=revision, recursive=True)
                  if hasattr(f, "size")}
        files = local_files(folder)
        pending = [f for f in files if not same_content(folder / f, remote.get(f))]
        for start in range(0, len(pending), files_per_commit):
            batch = pending[start:start + files_per_commit]
            part = start // files_per_commit + 1
            total = -(-len(pending) // files_per_commit)
            api.upload_folder(repo_id=repo, repo_type="dataset", folder_path=str(folder),
                              revision=revision, allow_patterns=batch,
                              commit_message=f"{message} (data {part}/{total})")
            if progress:
                progress(start + len(batch), len(pending))
        info = api.upload_file(path_or_fileobj=str(folder / CARD), path_in_repo=CARD,
                               repo_id=repo, repo_type="dataset", revision=revision,
                               commit_message=message)
    except OmniferError:
        raise
    except Exception as exc:  # network, permissions, quota: huggingface_hub raises many types
        raise OmniferError(f"upload to {repo} failed ({one_line(exc)}); fix the cause and run "
                           "the same command again: files already on the Hub are skipped"
                           ) from None
    return {"commit": getattr(info, "oid", None), "commit_url": getattr(info, "commit_url", None),
            "repo_url": str(url), "uploaded": pending, "skipped": len(files) - len(pending)}
