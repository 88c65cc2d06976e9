"""``PredictConfig``: how ``omnifer predict`` runs a trained model on new images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from omnifer.config import StageConfig
from omnifer.device import parse_device
from omnifer.errors import OmniferError
from omnifer.train.config import check_mc_dropout

#: Face detectors ``detect`` may name (None: the images are face crops).
DETECTORS = ("retinaface",)
#: Output formats: ``table`` is for people (stdout only), the others for files or pipes.
FORMATS = ("table", "csv", "parquet", "json")


@dataclass(frozen=True)
class PredictConfig(StageConfig):
    """How ``omnifer predict`` reads images and runs a model (or ensemble) on them."""

    section: ClassVar[str] = "predict"
    noun: ClassVar[str] = "prediction"

    batch_size: int = 256
    device: str = "auto"
    #: Monte-Carlo dropout passes per member (0: off); gives one model an epistemic part
    mc_dropout: int = 0
    mc_rate: float | None = None  #: their dropout rate (None: the model's own)
    fps: float = 1.0  #: video inputs: frames sampled per second
    detect: str | None = None  #: "retinaface": detect and align faces; None: face crops
    on_bad_files: str = "skip"  #: an unreadable image or frame: skip, warn or error
    #: None: from the output file's suffix (a table on stdout without one)
    format: str | None = None
    #: the out-of-distribution distance to the training set's embeddings (needs that set)
    distance: bool = True

    def __post_init__(self) -> None:
        parse_device(self.device)
        if isinstance(self.batch_size, bool) or int(self.batch_size) < 1:
            raise OmniferError(f"batch_size is {self.batch_size}; it must be at least 1, e.g. "
                               "--batch-size 256")
        check_mc_dropout(self.mc_dropout, self.mc_rate)
        try:
            fps_ok = not isinstance(self.fps, bool) and 0.0 < float(self.fps) <= 1000.0
        except (TypeError, ValueError):
            fps_ok = False
        if not fps_ok:
            raise OmniferError(f"fps is {self.fps!r}; give frames per second in (0, 1000], "
                               "e.g. --fps 1")
        if self.detect is not None and self.detect not in DETECTORS:
            raise OmniferError(f"unknown detector {self.detect!r}; use --detect "
                               f"{' or '.join(DETECTORS)}, or leave it out for face crops")
        from omnifer.data.badfiles import check_policy  # omnifer.data loads pandas

        object.__setattr__(self, "on_bad_files", check_policy(self.on_bad_files))
        if self.format is not None:
            fmt = str(self.format).strip().lower()
            if fmt not in FORMATS:
                raise OmniferError(f"unknown format {self.format!r}; use one of "
                                   f"{', '.join(FORMATS)}, e.g. --format csv")
            object.__setattr__(self, "format", fmt)
        if not isinstance(self.distance, bool):
            raise OmniferError(f"distance is {self.distance!r}; use true or false")
