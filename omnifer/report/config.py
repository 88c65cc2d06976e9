"""``ReportConfig``: what ``omnifer report`` shows of a workspace."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from omnifer.config import StageConfig
from omnifer.device import parse_device
from omnifer.errors import OmniferError


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OmniferError(f"{name} is {value!r}; use an integer of at least {minimum}")


@dataclass(frozen=True)
class ReportConfig(StageConfig):
    """The knobs of a workspace report."""

    section: ClassVar[str] = "report"

    faces_per_class: int = 6  #: best and borderline mined faces shown per class
    map_points: int = 3000  #: points per group in the embedding map
    seed: int = 0  #: subsampling of the embedding map
    device: str = "auto"  #: for the labeled embeddings of the map

    def __post_init__(self) -> None:
        _check_int("faces_per_class", self.faces_per_class, 1)
        _check_int("map_points", self.map_points, 1)
        _check_int("seed", self.seed, 0)
        parse_device(self.device)
