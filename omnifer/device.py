"""One device argument, ``auto|cpu|cuda|cuda:N``, resolved once for torch and for FAISS.

The rule is the same everywhere: ``auto`` uses a GPU when one is present and the CPU
otherwise; ``cuda`` or ``cuda:N`` on a machine without CUDA is a one-line error. Only FAISS
builds without GPU support (faiss-cpu) fall back to the CPU, with a warning, because the rest
of the run still uses the GPU.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from omnifer.errors import OmniferError

log = logging.getLogger(__name__)

DEVICES = "auto, cpu, cuda or cuda:N"


def parse_device(device: str | Any = "auto") -> tuple[str, int | None]:
    """``(kind, index)`` of a device string: kind is auto, cpu or cuda; index only for cuda:N.

    Accepts a ``torch.device`` too. Nothing is imported, so configs validate cheaply.
    """
    text = str(device).strip().lower()
    match = re.fullmatch(r"(auto|cpu|cuda)(?::(\d+))?", text)
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise OmniferError(f"unknown device {str(device)!r}; use {DEVICES}")
    return match.group(1), None if match.group(2) is None else int(match.group(2))


def resolve_device(device: str | Any = "auto") -> Any:
    """The ``torch.device`` for ``device``; raises when CUDA is asked for and absent."""
    import torch

    kind, index = parse_device(device)
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise OmniferError(f"device {str(device)!r} asked for but CUDA is not available; use cpu "
                           "or auto")
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise OmniferError(f"device {str(device)!r} names GPU {index}, but {count} GPU(s) are "
                           f"visible; use cuda:0 to cuda:{count - 1}")
    return torch.device("cuda" if index is None else f"cuda:{index}")


def is_gpu(device: str | Any = "auto") -> bool:
    """Whether ``device`` resolves to a CUDA device (for device-dependent defaults)."""
    return resolve_device(device).type == "cuda"


def import_faiss() -> Any:
    """The ``faiss`` module, or a one-line error saying which extra installs it."""
    try:
        import faiss
    except ImportError:
        raise OmniferError("FAISS is not installed; install one FAISS build: pip install "
                           "'omnifer[cpu]' (or 'omnifer[gpu]' on CUDA machines)") from None
    return faiss


def faiss_gpus(device: str | Any = "auto") -> list[int]:
    """The GPU ids FAISS uses for ``device``: none for ``cpu`` or when FAISS has no GPU
    support, every visible GPU for ``auto`` and ``cuda``, one for ``cuda:N``."""
    kind, index = parse_device(device)
    if kind == "cpu":
        return []
    faiss = import_faiss()
    available = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if available == 0:
        if kind == "cuda":
            log.warning("device %s asked for, but FAISS sees no GPU (faiss-cpu installed?); "
                        "the index runs on the CPU", device)
        return []
    if index is None:
        return list(range(available))
    if index >= available:
        raise OmniferError(f"device {str(device)!r} names GPU {index}, but FAISS sees {available} "
                           f"GPU(s); use cuda:0 to cuda:{available - 1}, cuda or auto")
    return [index]
