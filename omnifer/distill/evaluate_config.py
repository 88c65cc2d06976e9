"""``DistillEvaluateConfig``: the knobs of ``omnifer distill evaluate``, their defaults (written
only here) and their validation (without torch).

The evaluation networks follow the model run (backbone, input size and training recipe of its
``TrainConfig``); only the step budgets, the seeds and the arms are set here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from omnifer.config import StageConfig
from omnifer.device import parse_device
from omnifer.errors import OmniferError


def check_count(name: str, value: Any, minimum: int = 1) -> None:
    """``value`` must be an integer (not a bool) of at least ``minimum``; else one line."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OmniferError(f"{name} is {value!r}; use an integer of at least {minimum}")


@dataclass(frozen=True)
class DistillEvaluateConfig(StageConfig):
    """How ``omnifer distill evaluate`` trains fresh networks on a distilled set and baselines:
    each arm trains ``seeds`` networks with the model run's recipe for a fixed number of
    optimizer steps (``steps``; ``full_steps`` for the full data) and tests them on real faces."""

    section: ClassVar[str] = "distill_evaluate"

    baselines: bool = False  #: also random, herding and k-center subsets, and the full data
    seeds: int = 5  #: networks per arm (seeds 0 .. seeds - 1)
    steps: int = 150  #: optimizer steps of every small arm (distilled set, coresets)
    full_steps: int = 400  #: optimizer steps of the full-data arm
    device: str = "auto"

    def __post_init__(self) -> None:
        check_count("seeds", self.seeds)
        check_count("steps", self.steps)
        check_count("full_steps", self.full_steps)
        parse_device(self.device)
