"""``omnifer synth OUT``: write the synthetic FER benchmark."""

from __future__ import annotations

from typing import Any

import click

from omnifer.cli.common import Context, config_option, make_config, pass_ctx
from omnifer.synth.options import SynthOptions as D


@click.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@config_option
@click.option("--preset", default=None, help=f"Size preset: tiny, small, demo, scale or large [{D.preset}].")
@click.option("--seed", default=None, type=int,
              help=f"Same seed, byte-identical output [{D.seed}].")
@click.option("--size", default=None, type=click.IntRange(16, 512),
              help="Face size in pixels [default: the preset's, 112].")
@click.option("--domain-shift", is_flag=True, default=None,
              help="Render the pool with a shifted identity and lighting distribution.")
@click.option("--label-noise", default=None, type=float, metavar="RATE",
              help="Flip this share of the labeled expression labels to another class; the "
                   f"flips are recorded in OUT/label_noise.parquet [{D.label_noise}].")
@pass_ctx
def command(ctx: Context, out: str, config_file: str | None, **options: Any) -> None:
    """Write labeled databases, an unlabeled pool (with hidden truth) and a test set to OUT."""
    from omnifer import pipeline

    rec = pipeline.synth(ctx.workspace, make_config(D, config_file, **options), out=out,
                         progress=ctx.progress)
    images = {k: v for k, v in rec.counts.items() if not k.startswith("label_noise_")}
    total = sum(v for v in images.values() if isinstance(v, int))
    text = [f"wrote {total} images to {rec.out} in {rec.seconds:.1f}s (run {rec.ref})"]
    text += [f"  {k:<12} {v}" for k, v in images.items()]
    if rec.label_noise is not None:
        flips = ", ".join(f"{rec.counts.get('label_noise_' + s, 0)} in {s}"
                          for s in ("expr", "multi"))
        text.append(f"  flipped expression labels: {flips} (truth: {rec.label_noise})")
    text.append(ctx.next(f"train --data {rec.labeled}"))
    ctx.emit({"run": rec.ref, "out": rec.out, "labeled": rec.labeled, "test": rec.test,
              "pool": rec.pool, "pool_truth": rec.pool_truth,
              "label_noise": rec.label_noise, "counts": rec.counts,
              "seconds": rec.seconds}, "\n".join(text))
