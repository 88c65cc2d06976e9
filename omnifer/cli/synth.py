"""``omnifer synth OUT``: write the synthetic FER benchmark."""

from __future__ import annotations

from pathlib import Path

import click

from omnifer.cli.common import Context, pass_ctx


@click.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--preset", default="demo", show_default=True,
              help="Size preset: tiny, small, demo or large.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Same seed, byte-identical output.")
@click.option("--size", default=None, type=click.IntRange(16, 512),
              help="Face size in pixels [default: the preset's, 112].")
@click.option("--domain-shift", is_flag=True,
              help="Render the pool with a shifted identity and lighting distribution.")
@pass_ctx
def command(ctx: Context, out: str, preset: str, seed: int, size: int | None,
            domain_shift: bool) -> None:
    """Write labeled databases, an unlabeled pool (with hidden truth) and a test set to OUT."""
    from omnifer.synth import generate

    config = {"out": str(Path(out).resolve()), "preset": preset, "seed": seed, "size": size,
              "domain_shift": domain_shift}
    with ctx.workspace.start_run("synth", config=config, seed=seed, device="cpu",
                                 resume=False) as run:
        with ctx.progress("synth", unit="face") as bar:
            result = generate(out, preset=preset, seed=seed, size=size,
                              domain_shift=domain_shift, on_progress=bar)
        run.complete(outputs=result.outputs, counts=result.counts,
                     synth_seconds=result.seconds)
    total = sum(v for v in result.counts.values() if isinstance(v, int))
    text = [f"wrote {total} images to {result.out} in {result.seconds:.1f}s "
            f"(run synth/{run.run_id})"]
    text += [f"  {k:<12} {v}" for k, v in result.counts.items()]
    text.append(f"next: omnifer train --data {result.outputs['labeled']}")
    ctx.emit({"run": f"synth/{run.run_id}", **result.outputs, "counts": result.counts,
              "seconds": result.seconds}, "\n".join(text))
