"""``synth``: write the built-in synthetic FER benchmark and record it as a run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from omnifer.config import StageConfig
from omnifer.errors import OmniferError
from omnifer.pipeline import resolve
from omnifer.pipeline.progress import Progress, bar
from omnifer.records import SynthRun


@dataclass(frozen=True)
class SynthOptions(StageConfig):
    """What ``omnifer synth`` writes: the same options give byte-identical output."""

    section: ClassVar[str] = "synth"

    preset: str = "demo"  #: tiny, small, demo or large
    seed: int = 0
    size: int | None = None  #: face size in pixels; None: the preset's
    domain_shift: bool = False  #: pool with shifted identities and lighting

    def __post_init__(self) -> None:
        if self.size is not None and not 16 <= self.size <= 512:
            raise OmniferError(f"size is {self.size}; use 16 to 512 pixels")


def synth(workspace: Any = None, config: SynthOptions | None = None, *, out: Any,
          progress: Progress | None = None) -> SynthRun:
    """Write labeled databases, an unlabeled pool (with hidden truth) and a test set to
    ``out``; later stages find them through the returned run."""
    from omnifer.synth import generate

    ws = resolve.workspace(workspace)
    config = config or SynthOptions()
    out = Path(out).resolve()
    run_config = {"out": ws.portable(out), **config.to_dict()}
    with ws.start_run("synth", config=run_config, seed=config.seed, device="cpu",
                      resume=False) as run:
        with bar(progress, "synth", "face") as update:
            result = generate(out, preset=config.preset, seed=config.seed,
                              size=config.size, domain_shift=config.domain_shift,
                              on_progress=update)
        run.complete(outputs=result.outputs, counts=result.counts, synth_seconds=result.seconds)
    return SynthRun.from_run(run)
