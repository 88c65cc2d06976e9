"""``omnifer distill --images-per-class 10``: compress a mined set into a few synthetic images per
class; ``omnifer distill evaluate RUN``: train fresh networks on them against coreset baselines."""

from __future__ import annotations

from typing import Any

import click
import numpy as np

from omnifer.cli.common import Context, config_option, existing_ref, make_config, pass_ctx
from omnifer.distill.config import DistillConfig as D
from omnifer.distill.evaluate_config import DistillEvaluateConfig as E


@click.group("distill", invoke_without_command=True)
@config_option
@click.option("--images-per-class", "images_per_class", type=int, default=None,
              help=f"[{D.images_per_class}]")
@click.option("--from", "source_ref", default=None, metavar="RUN_OR_PATH", callback=existing_ref,
              help="Data to distil [default: the latest mine run's dataset].")
@click.option("--with-labeled", is_flag=True, default=None, help="Add the labeled set to the source.")
@click.option("--labeled", default=None, callback=existing_ref, help="Labeled data for --with-labeled [default: the "
              "labeled data the source was mined with, else the latest synth run's labeled.toml].")
@click.option("--method", default=None,
              help="rded (real views the model picks and labels), sre2l (images recovered from "
                   "the model's batch-norm statistics), dm (distribution matching), gm (gradient "
                   f"matching) or tm (trajectories) [{D.method}].")
@click.option("--model", "model_ref", default=None, callback=existing_ref,
              help="Model that scores the images [default: the one that mined the source].")
@click.option("--size", type=int, default=None,
              help="Image side in pixels [default: the model's input size].")
@click.option("--factor", type=int, default=None,
              help=f"rded: real views per side of an image, 2 stitches 2x2 [{D.factor}].")
@click.option("--views", type=int, default=None,
              help=f"rded: random views scored per real image [{D.views}].")
@click.option("--select", default=None,
              help="rded: top (the views the model scores highest) or spread (evenly over its "
                   f"scores, from typical to borderline) [{D.select}].")
@click.option("--candidates", type=int, default=None,
              help="rded: real images per class drawn at random to be scored; 0 scores every "
                   f"image [{D.candidates}].")
@click.option("--iterations", type=int, default=None,
              help="Image updates [dm 1000 (500 on CPU), gm 200, tm 500, sre2l 200].")
@click.option("--lr-images", type=float, default=None, help="Learning rate of the pixels.")
@click.option("--soft-labels", is_flag=True, default=None, help="Learn soft labels too (gm, tm).")
@click.option("--width", type=int, default=None,
              help="Channels of the ConvNets that distil and evaluate [128 on GPU, 32 on CPU].")
@click.option("--batch-real", type=int, default=None,
              help="dm, gm: real images per class per step [128 on GPU, 64 on CPU].")
@click.option("--seed", type=int, default=None, help=f"[{D.seed}]")
@click.option("--device", default=None, help=f"auto, cpu, cuda or cuda:N [{D.device}].")
@click.option("--resume/--fresh", default=True, show_default=True,
              help="Continue an unfinished run with the same options from its last checkpoint.")
@click.pass_context
def command(click_ctx: click.Context, config_file: str | None, source_ref: str | None,
            labeled: str | None, model_ref: str | None, resume: bool, **options: Any) -> None:
    """Distil the mined set into --images-per-class synthetic images per class."""
    if click_ctx.invoked_subcommand is not None:
        return
    from omnifer import pipeline

    ctx = click_ctx.find_object(Context)
    config = make_config(D, config_file, **options)
    rec = pipeline.distill(ctx.workspace, config, source=source_ref, labeled=labeled,
                           model=model_ref, resume=resume, progress=ctx.progress)
    cfg = rec.config
    steps = f", {rec.iterations} iterations" if rec.iterations else ""
    lines = [f"{rec.ref}: {rec.counts['distilled']} images ({cfg.images_per_class} per class, "
             f"{cfg.size} px) from {rec.counts['source']} by {rec.method}{steps} in "
             f"{rec.seconds:.0f}s"]
    if rec.agreement is not None:
        lines.append(f"  the model ({rec.model}) gives {rec.agreement:.1%} of them their label")
    lines += [f"  {name}: {f['images']} image(s), filled with {f['views_added']} augmented "
              "view(s)" for name, f in rec.filled.items()]
    lines += [f"  wrote {rec.dataset} and {rec.grid}",
              ctx.next(f"distill evaluate {rec.ref} --baselines",
                       f"train --student --with {rec.ref}")]
    ctx.emit({"run": rec.ref, "dataset": rec.dataset, "grid": rec.grid, "method": rec.method,
              "iterations": rec.iterations, "seconds": rec.seconds, "model": rec.model,
              "agreement": rec.agreement, "filled": rec.filled}, "\n".join(lines))


@command.command("evaluate")
@click.argument("run_ref", required=False, metavar="[RUN]", callback=existing_ref)
@config_option
@click.option("--baselines", is_flag=True, default=None,
              help="Also random, herding and k-center subsets of the same size, and full data.")
@click.option("--model", "model_ref", default=None, callback=existing_ref, metavar="RUN",
              help="Train run whose backbone, input size and recipe the networks use "
                   "[default: the one that made the set, else the latest].")
@click.option("--test", "test_ref", default=None, callback=existing_ref,
              help="Labeled test data [default: the latest synth run's test.toml].")
@click.option("--seeds", type=int, default=None, help=f"Networks per set [{E.seeds}].")
@click.option("--steps", type=int, default=None, help=f"Optimizer steps per network [{E.steps}].")
@click.option("--full-steps", type=int, default=None,
              help=f"Optimizer steps of the full-data networks [{E.full_steps}].")
@click.option("--device", default=None, help=f"[{E.device}]")
@pass_ctx
def evaluate(ctx: Context, run_ref: str | None, config_file: str | None, model_ref: str | None,
             test_ref: str | None, **options: Any) -> None:
    """Train fresh networks only on a distilled set (and baselines) with the model's recipe."""
    from omnifer import pipeline

    config = make_config(E, config_file, **options)
    rec = pipeline.distill_evaluate(ctx.workspace, config, run=run_ref, model=model_ref,
                                    test=test_ref, progress=ctx.progress)
    ev = rec.evaluation
    results = ev["results"]
    full = results.get("full data", {}).get("mean")
    lines = [f"{rec.ref}: {ev['seeds']} {ev['backbone']} networks ({ev['input_size']} px, recipe "
             f"of {ev['model']}) per set, {ev['steps']} steps"
             + (f" ({ev['full_steps']} for full data)" if full is not None else "")
             + f", tested on {ev['test_faces']} faces of its {ev['classes']} classes",
             "  set                   images  accuracy          macro-F1          of full  seconds"
             "  model agrees"]
    for name in ev["arms"]:
        r = results[name]
        share = f"{r['mean'] / full:7.1%}" if full else "      -"
        soft = " (soft labels)" if r.get("soft_labels") else ""
        lines.append(f"  {name:<21} {r['images']:>6}  {r['mean']:.4f} +- {r['std']:.4f}  "
                     f"{np.mean(r['macro_f1']):.4f} +- {np.std(r['macro_f1']):.4f}  {share}  "
                     f"{r['seconds']:7.1f}  {r['model_agreement']:12.1%}{soft}")
    if ev["near_chance"]:
        lines.append(f"  note: no set scores above 1.5x chance ({1 / ev['classes']:.1%}): the "
                     "networks did not learn the task in these steps, so the sets cannot be "
                     "compared this way; raise --steps / --full-steps or compare 'model agrees'")
    ctx.emit({"run": rec.ref, **ev}, "\n".join(lines))
