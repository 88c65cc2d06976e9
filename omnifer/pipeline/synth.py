"""``synth``: write the built-in synthetic FER benchmark and record it as a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omnifer.pipeline import resolve
from omnifer.pipeline.progress import Progress, bar
from omnifer.records import SynthRun
from omnifer.synth.options import SynthOptions


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
                              label_noise=config.label_noise, on_progress=update)
        counts = {**result.counts, **{k: v for k, v in result.details.items()
                                      if k.startswith("label_noise_")}}
        run.complete(outputs=result.outputs, counts=counts, synth_seconds=result.seconds)
    return SynthRun.from_run(run)
