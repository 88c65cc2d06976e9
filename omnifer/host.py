"""The machine a run ran on: its CPU, its widest vector instructions, its cores.

Float results of training (and so every quality figure) can differ in their last digits from
one CPU to another with the same code and seed, because torch picks its kernels by the CPU's
vector instructions; each run's manifest records this, so that two results can be compared
knowing whether they came from the same kind of machine.
"""

from __future__ import annotations

import os
import platform
from typing import Any

__all__ = ["cpu", "describe"]

#: ``/proc/cpuinfo`` flag -> vector instruction set, widest first
VECTOR = {"avx512f": "avx512", "avx2": "avx2", "avx": "avx", "sse4_2": "sse4.2", "sve": "sve",
          "asimd": "neon", "neon": "neon"}


def _cpuinfo(path: str) -> dict[str, str]:
    """The first processor's fields of ``path`` (empty where it cannot be read)."""
    out: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                out[key.strip()] = value.strip()
    except OSError:
        pass
    return out


def cpu(cpuinfo: str = "/proc/cpuinfo") -> dict[str, Any]:
    """``model`` (the name, with family/model/stepping: under virtual machines the name alone
    is often vague), ``cores`` (usable by this process) and ``vector`` (the widest of
    ``avx512``, ``avx2``, ``neon``, ...: torch picks its CPU kernels by it; absent where the
    system does not say)."""
    info = _cpuinfo(cpuinfo)
    model = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info:
        model += (f" (family {info['cpu family']} model {info.get('model', '?')} stepping "
                  f"{info.get('stepping', '?')})")
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    out: dict[str, Any] = {"model": model, "cores": cores}
    flags = set((info.get("flags") or info.get("Features") or "").split())
    vector = next((name for flag, name in VECTOR.items() if flag in flags), None)
    if vector:
        out["vector"] = vector
    return out


def describe(c: dict[str, Any] | None = None) -> str:
    """One line for ``c`` (a :func:`cpu` result, e.g. from a run's manifest; this machine's
    by default): ``AMD EPYC (family 25 model 17 stepping 1), 2 cores, avx512``."""
    c = cpu() if c is None else c
    return ", ".join([str(c["model"]), f"{c['cores']} cores",
                      *([str(c["vector"])] if "vector" in c else [])])
