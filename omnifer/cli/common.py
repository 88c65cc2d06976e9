"""What every command shares: the workspace, JSON output, progress bars, ``--config``, hints
and the one-line forms of errors."""

from __future__ import annotations

import errno
import os
import shlex
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from omnifer.artifacts import json_text
from omnifer.errors import OmniferError
from omnifer.records import RECORDS
from omnifer.workspace import Workspace


@dataclass
class Context:
    workspace_root: str | None
    as_json: bool
    quiet: bool
    argv: tuple[str, ...] = ()  #: the command line's arguments, to start it again

    @property
    def workspace(self) -> Workspace:
        return Workspace(self.workspace_root)

    def emit(self, result: Any, text: str) -> None:
        """Print ``text`` for people, or ``result`` as JSON with ``--json``."""
        if self.as_json:
            click.echo(json_text(result))
        else:
            click.echo(text)

    def command(self, args: str) -> str:
        """``omnifer ARGS`` as the user can type it again: with the ``-w`` they gave."""
        ws = f"-w {shlex.quote(self.workspace_root)} " if self.workspace_root else ""
        return f"omnifer {ws}{args}"

    def next(self, *commands: str) -> str:
        """The ``next:`` line suggesting one or more commands."""
        return "next: " + ", or ".join(self.command(c) for c in commands)

    def progress(self, desc: str, unit: str = "it") -> AbstractContextManager[Callable[[int, int], None]]:
        """A progress bar on stderr (none with ``--quiet``), for ``pipeline`` functions."""
        from omnifer.pipeline.progress import tqdm_progress

        return tqdm_progress(desc, unit, disable=self.quiet or None)


def config_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--config FILE.toml``: the stage's options from a file; flags given override it."""
    return click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
                        help="TOML file of this stage's options (flags given here override "
                             "it).")(fn)


def make_config(cls: Any, config_file: str | None, **flags: Any) -> Any:
    """``cls`` from the defaults, then ``config_file``, then the flags that were given."""
    return cls.from_toml(config_file).replace(**flags)


def bad_files_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--on-bad-files", type=click.Choice(["error", "warn", "skip"]),
                        default=None, help="What an unreadable image does.")(fn)


def num(value: Any, spec: str = ".4f") -> str:
    """A metric for people; ``-`` where it is undefined (recorded as null)."""
    return "-" if value is None else format(value, spec)


def existing_ref(click_ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Option callback for RUN_OR_PATH options: a value that can only be a path must exist
    (a run id, ``stage/ID``, ``stage/latest`` or ``hf://`` is left to the stage)."""
    for v in value if isinstance(value, tuple) else (value,):
        if v is None or v.startswith("hf://") or os.path.exists(v):
            continue
        head = v.split("/", 1)[0]
        if os.path.isabs(v) or v.startswith((".", "~")) or Path(v.split("@")[0]).suffix \
                or ("/" in v and head not in RECORDS):
            raise OmniferError(f"{param.opts[0]} {v}: no such file or folder; pass an existing "
                               "path or a run (STAGE/ID, STAGE/latest)")
    return value


def os_error_line(exc: OSError) -> str | None:
    """One line for an OS error a user can fix (permissions, a read-only or full disk)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on device writing {exc.filename}; free some space (or write the "
                "workspace elsewhere with -w) and run the same command again to resume")
    if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS) or not exc.filename:
        return None
    path = Path(os.fsdecode(exc.filename))
    while not path.exists() and path != path.parent:
        path = path.parent
    reason = (exc.strerror or "permission denied").lower()
    if path.is_dir():
        return (f"cannot write to {path}: {reason}; make it writable (chmod u+w) or use another "
                "workspace (-w DIR)")
    return f"cannot open {path}: {reason}; check its permissions (ls -l)"


pass_ctx = click.make_pass_decorator(Context)
