"""Progress reporting for pipeline stages, without printing.

A stage takes ``progress``: a function ``progress(desc, unit)`` that returns a context manager
yielding ``update(done, total)``. ``None`` reports nothing; :func:`tqdm_progress` draws tqdm
bars on stderr (the CLI's choice; in a notebook, pass it to see bars there), or, where stderr
is no terminal (a log file, a batch job), :func:`line_progress` prints a plain line now and
then.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

Update = Callable[[int, int], None]
Progress = Callable[[str, str], AbstractContextManager[Update]]

#: Seconds between the lines of :func:`line_progress`.
LINE_EVERY = 60.0


@contextmanager
def no_progress(desc: str = "", unit: str = "it") -> Iterator[Update]:
    yield lambda done, total: None


@contextmanager
def tqdm_progress(desc: str, unit: str = "it", *, disable: bool | None = None) -> Iterator[Update]:
    """A tqdm bar on stderr (in a notebook, in the notebook) driven by ``update(done,
    total)``; ``disable`` True: nothing; None, where stderr is no terminal and not a
    notebook's: :func:`line_progress` lines instead."""
    if disable is None and not (sys.stderr.isatty() or "ipykernel" in sys.modules):
        with line_progress(desc, unit) as update:
            yield update
        return
    from tqdm.auto import tqdm

    bar = tqdm(desc=desc, unit=unit, file=sys.stderr, disable=bool(disable), dynamic_ncols=True,
               smoothing=0.1)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()


@contextmanager
def line_progress(desc: str, unit: str = "it", *, every: float | None = None,
                  file: Any = None) -> Iterator[Update]:
    """Progress as plain lines on ``file`` (default: stderr), for logs: one each ``every``
    seconds (default: :data:`LINE_EVERY`) while the work goes on (done, total, elapsed, time
    left at the rate so far), and one when it ends; work done sooner prints nothing."""
    every = LINE_EVERY if every is None else every
    start = last = time.monotonic()
    state = [0, 0]  # done, total
    printed = False

    def line(now: float) -> None:
        done, total = state
        elapsed = now - start
        share = f" ({done / total:.0%})" if total else ""
        left = ""
        if 0 < done < total:
            left = f", about {clock((total - done) * elapsed / done)} left"
        print(f"{desc}: {done:,}/{total:,} {unit}{share} in {clock(elapsed)}{left}",
              file=file or sys.stderr, flush=True)

    def update(done: int, total: int) -> None:
        nonlocal last, printed
        state[:] = done, total
        now = time.monotonic()
        if now - last >= every:
            last, printed = now, True
            line(now)

    try:
        yield update
    finally:
        if printed:
            line(time.monotonic())


def clock(seconds: float) -> str:
    """``seconds`` for people: ``2 min 03 s`` or ``3 s``."""
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def bar(progress: Progress | None, desc: str, unit: str = "it") -> AbstractContextManager[Update]:
    """``progress(desc, unit)``, or a silent stand-in when ``progress`` is None."""
    return (progress or no_progress)(desc, unit)
