"""Fingerprints of the data and experts, and the checkpoint that lets a run resume.

The checkpoint holds the learnables, the optimizer and the generator state, so a resumed run
ends with the same result as an uninterrupted one; it is refused when the fingerprint of the
arguments and data differs.
"""

from __future__ import annotations

import hashlib
import logging
import os

import torch

from omnifer.artifacts import atomic_path
from omnifer.distill.methods.state import Run
from omnifer.errors import ConfigMismatchError, OmniferError

log = logging.getLogger(__name__)


def data_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(str(tuple(x.shape)).encode())
    h.update(x.numpy().tobytes())
    h.update(y.numpy().tobytes())
    return h.hexdigest()


def experts_fingerprint(experts: list[torch.Tensor]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for e in experts:
        h.update(e.contiguous().numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, tag: str, run: Run, iteration: int,
                    history: list[float], seconds: float) -> None:
    state = {"fingerprint": tag, "iteration": iteration, "history": list(history),
             "seconds": seconds, "generator": run.gen.get_state(),
             "learnables": {k: v.detach().cpu() for k, v in run.learnables.items()},
             "optimizer": run.optimizer.state_dict()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike, tag: str, run: Run,
                    iterations: int) -> tuple[int, list[float], float]:
    """Restore ``run`` from ``path``; return (iteration, loss history, seconds so far)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
        raise OmniferError(
            f"checkpoint {path} is unreadable ({type(exc).__name__}); delete it to start over"
        ) from None
    if state.get("fingerprint") != tag:
        raise ConfigMismatchError(
            f"checkpoint {path} was made with other arguments or data (config "
            f"{state.get('fingerprint')}, now {tag}); pass the original arguments or a new "
            "checkpoint path"
        )
    if state["iteration"] > iterations:
        raise OmniferError(
            f"checkpoint {path} is at iteration {state['iteration']}, beyond "
            f"iterations={iterations}; raise iterations or use a new checkpoint path"
        )
    with torch.no_grad():
        for name, value in state["learnables"].items():
            run.learnables[name].copy_(value)
    run.optimizer.load_state_dict(state["optimizer"])
    run.gen.set_state(state["generator"])
    log.info("resumed from %s at iteration %d", path, state["iteration"])
    return int(state["iteration"]), list(state["history"]), float(state["seconds"])
