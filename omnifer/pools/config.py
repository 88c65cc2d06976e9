"""``IndexConfig``: every knob of ``omnifer index``, filled alike by flags and config files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from omnifer.config import StageConfig
from omnifer.device import parse_device
from omnifer.errors import OmniferError


@dataclass(frozen=True)
class IndexConfig(StageConfig):
    """How a pool is read, embedded and indexed."""

    section: ClassVar[str] = "index"

    source: str | None = None  #: pool format; None: detected
    detect: str | None = None  #: "retinaface" to detect and align; None: aligned crops
    det_threshold: float = 0.5
    min_face: int = 20  #: smallest face side in pixels
    fps: float | None = None  #: video pools: frames per second (the reader's default: 1)
    column: str | None = None  #: image column of tsv/parquet/hf pools
    batch_size: int | None = None  #: faces per model call; None: 64 on CPU, 256 on GPU
    shard_size: int = 8192  #: pool items per resumable shard
    #: reading processes; None: on a GPU, CPU count - 1; on a CPU, CPU count - 2 (0 on 2 CPUs:
    #: reading in the main process); at most 8
    workers: int | None = None
    engine: str = "local"
    factory: str = "auto"  #: FAISS factory string; auto: flat up to 1M vectors
    device: str = "auto"
    on_bad_files: str = "warn"

    def __post_init__(self) -> None:
        from omnifer.data.badfiles import check_policy  # omnifer.data loads pandas

        parse_device(self.device)
        object.__setattr__(self, "on_bad_files", check_policy(self.on_bad_files))
        for name, low in (("batch_size", 1), ("shard_size", 1), ("min_face", 1), ("workers", 0)):
            value = getattr(self, name)
            if value is not None and int(value) < low:
                raise OmniferError(f"{name} is {value}; it must be at least {low}")
        if self.fps is not None and not self.fps > 0:
            raise OmniferError(f"fps is {self.fps}; use a positive number of frames per second")

    def resolved_batch_size(self, gpu: bool) -> int:
        """The batch size: as set, else 256 on GPU and 64 on CPU (larger runs slower there)."""
        return self.batch_size or (256 if gpu else 64)

    def resolved_workers(self, cpus: int, gpu: bool) -> int:
        """Reading processes: as set, else at most 8, leaving the model one core on a GPU and
        two on a CPU, where it runs on every core: reading processes beside it slow it
        down more than reading costs, so on 2 CPUs the main process reads between batches
        (docs/benchmarks.md, embedding against its ceiling)."""
        if self.workers is not None:
            return self.workers
        return max(0, min(8, cpus - (1 if gpu else 2)))
