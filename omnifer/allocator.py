"""Keep freed memory in the process for work that allocates the same large buffers over and
over (each batch's decoded images, input tensor and activations, in embedding and training).

By default glibc's ``malloc`` gives the top of the heap back to the system once more than its
trim threshold is free, and serves requests above its mmap threshold with fresh pages, so on a
CPU every batch faults its buffers in again. With both thresholds raised, embedding with the
fastest models spends a fraction of the time in the kernel and comes within a few percent of
the machine's ceiling (docs/benchmarks.md, "The process keeps freed memory"). The cost: memory
freed after the peak stays with the process instead of going back to the system.

Elsewhere than glibc (macOS, Windows, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  #: glibc's mallopt parameters
#: requests up to this size come from the heap (glibc's largest mmap threshold on 64 bits)
MMAP_THRESHOLD = 32 << 20
#: free memory the heap keeps before it is given back to the system
TRIM_THRESHOLD = 1 << 30


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process, once; whether it could."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
