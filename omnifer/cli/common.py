"""What every command shares: the workspace, JSON output, progress bars and ``--config``."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import click

from omnifer.artifacts import to_jsonable
from omnifer.workspace import Workspace


@dataclass
class Context:
    workspace_root: str | None
    as_json: bool
    quiet: bool

    @property
    def workspace(self) -> Workspace:
        return Workspace(self.workspace_root)

    def emit(self, result: Any, text: str) -> None:
        """Print ``text`` for people, or ``result`` as JSON with ``--json``."""
        if self.as_json:
            click.echo(json.dumps(to_jsonable(result), indent=2, sort_keys=True))
        else:
            click.echo(text)

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


pass_ctx = click.make_pass_decorator(Context)
