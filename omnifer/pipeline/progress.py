"""Progress reporting for pipeline stages, without printing.

A stage takes ``progress``: a function ``progress(desc, unit)`` that returns a context manager
yielding ``update(done, total)``. ``None`` reports nothing; :func:`tqdm_progress` draws tqdm
bars on stderr (the CLI's choice; in a notebook, pass it to see bars there).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

Update = Callable[[int, int], None]
Progress = Callable[[str, str], AbstractContextManager[Update]]


@contextmanager
def no_progress(desc: str = "", unit: str = "it") -> Iterator[Update]:
    yield lambda done, total: None


@contextmanager
def tqdm_progress(desc: str, unit: str = "it", *, disable: bool | None = None) -> Iterator[Update]:
    """A tqdm bar on stderr driven by ``update(done, total)``."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit=unit, file=sys.stderr, disable=disable, dynamic_ncols=True,
               smoothing=0.1)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()


def bar(progress: Progress | None, desc: str, unit: str = "it") -> AbstractContextManager[Update]:
    """``progress(desc, unit)``, or a silent stand-in when ``progress`` is None."""
    return (progress or no_progress)(desc, unit)
