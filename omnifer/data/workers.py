"""Worker processes that end with the process that started them.

A DataLoader or process-pool worker whose parent is killed (``kill -9``, the OOM killer) would
otherwise live on, blocked on a queue nobody reads, holding its memory. :func:`exit_with_parent`
runs first in each worker: on Linux the kernel sends the worker SIGKILL when its parent dies
(``PR_SET_PDEATHSIG``); elsewhere a daemon thread checks the parent once a second.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from typing import Any

_PR_SET_PDEATHSIG = 1


def exit_with_parent(parent: int, *_: Any) -> None:
    """End this worker process when process ``parent`` (the one that started it) ends.

    Usable as a DataLoader ``worker_init_fn`` (``functools.partial(exit_with_parent,
    os.getpid())``) or a process-pool ``initializer`` (``initargs=(os.getpid(),)``).
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0:
                if os.getppid() != parent:  # the parent died before the call
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass
    threading.Thread(target=_watch, args=(parent,), daemon=True,
                     name="omnifer-parent-watch").start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)
