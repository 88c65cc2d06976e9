"""What every command shares: the workspace, JSON output and progress bars."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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

    @contextmanager
    def progress(self, desc: str, unit: str = "it") -> Iterator[Callable[[int, int], None]]:
        """A progress bar on stderr driven by a ``callback(done, total)``."""
        from tqdm import tqdm

        bar = tqdm(desc=desc, unit=unit, file=sys.stderr, disable=self.quiet or None,
                   dynamic_ncols=True, smoothing=0.1)

        def update(done: int, total: int) -> None:
            if bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

        try:
            yield update
        finally:
            bar.close()


pass_ctx = click.make_pass_decorator(Context)
