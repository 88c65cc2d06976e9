"""Several training processes on this machine: a command started again under ``torchrun``.

``torchrun`` gives each process ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; the training
itself joins their process group (:mod:`omnifer.train.distributed`). This module reads the
environment only, so that the command line can ask it without loading torch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence


def in_process_group() -> bool:
    """Whether this process is one of several started by ``torchrun``."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main() -> bool:
    """Whether this process is rank 0 (or the only process): the one that prints."""
    return os.environ.get("RANK", "0") == "0"


def torchrun(nproc: int, args: Sequence[str]) -> int:
    """``omnifer ARGS`` in ``nproc`` processes on this machine; returns their exit status.

    Each process gets ``cpu_count / nproc`` CPU threads unless ``OMP_NUM_THREADS`` is set.
    Interrupted (Ctrl-C, SIGTERM), the processes are stopped the same way: the run is marked
    failed and the same command resumes it."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "omnifer", *args]
    proc = subprocess.Popen(cmd, env=env)
    try:
        return proc.wait()
    except BaseException:
        proc.send_signal(signal.SIGTERM)  # torchrun passes it on to every process
        proc.wait()
        raise
