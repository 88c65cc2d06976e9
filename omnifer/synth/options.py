"""``SynthOptions``: the knobs of ``omnifer synth`` (the preset's own sizes live in
:class:`~omnifer.synth.config.SynthConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from omnifer.config import StageConfig
from omnifer.errors import OmniferError


@dataclass(frozen=True)
class SynthOptions(StageConfig):
    """What ``omnifer synth`` writes: the same options give byte-identical output."""

    section: ClassVar[str] = "synth"

    preset: str = "demo"  #: tiny, small, demo, scale or large
    seed: int = 0
    size: int | None = None  #: face size in pixels; None: the preset's
    domain_shift: bool = False  #: pool with shifted identities and lighting
    #: share of the labeled expression labels flipped to another class (truth in
    #: label_noise.parquet)
    label_noise: float = 0.0

    def __post_init__(self) -> None:
        if self.size is not None and not 16 <= self.size <= 512:
            raise OmniferError(f"size is {self.size}; use 16 to 512 pixels")
        if isinstance(self.label_noise, bool) or not isinstance(self.label_noise, (int, float)) \
                or not 0.0 <= self.label_noise < 1.0:
            raise OmniferError(f"label_noise is {self.label_noise!r}; use a share in [0, 1), "
                               "e.g. 0.1 (0: no label noise)")
