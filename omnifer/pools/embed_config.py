"""What decides the embeddings of a pool: :class:`EmbedConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omnifer.errors import OmniferError

#: Face detectors ``detect`` may name.
DETECTORS = ("retinaface",)


@dataclass(frozen=True)
class EmbedConfig:
    """What decides the embeddings of a pool (its fingerprint guards resume and reuse)."""

    pool: str
    source: str
    model: str  #: checkpoint directory
    model_fingerprint: str
    source_options: dict[str, Any] = field(default_factory=dict)
    input_size: int = 112
    detect: str | None = None
    det_threshold: float = 0.5
    min_face: int = 20
    batch_size: int = 256
    shard_size: int = 8192
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.detect is not None and self.detect not in DETECTORS:
            raise OmniferError(
                f"unknown detector {self.detect!r}; use --detect {' or '.join(DETECTORS)}, or "
                "leave it out for pools of aligned crops"
            )
        for name, low in (("batch_size", 1), ("shard_size", 1), ("min_face", 1)):
            if int(getattr(self, name)) < low:
                raise OmniferError(f"{name} is {getattr(self, name)}; it must be at least {low}")
        if not 0.0 <= self.det_threshold <= 1.0:
            raise OmniferError(f"det_threshold is {self.det_threshold}; use a value in [0, 1]")
