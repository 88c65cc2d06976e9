"""The process keeps freed memory for repeated large buffers (glibc); elsewhere nothing."""

from __future__ import annotations

import ctypes.util
import platform
import subprocess
import sys

import pytest

from omnifer import allocator

FAULTS = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from omnifer.allocator import keep_freed_memory
    assert keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def batch():  # a step's buffers: three of 20 MiB, used and freed
    bufs = [np.empty(20 << 20, np.uint8) for _ in range(3)]
    for b in bufs:
        b.fill(1)
batch(); batch()  # the first steps fault their pages in either way
start = faults()
for _ in range(10):
    batch()
print(faults() - start)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="glibc's malloc only")
def test_repeated_large_buffers_stop_faulting_pages_in() -> None:
    default = _faults("default")
    assert default >= (20 << 20) // 4096  # glibc gave freed buffers back and faults them in
    assert _faults("keep") < default // 10  # the heap keeps them and hands them out again


def test_without_a_c_library_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert allocator.keep_freed_memory.__wrapped__() is False
