"""``omnifer train``: a multitask teacher, a student of a teacher, or an ensemble of either."""

from __future__ import annotations

import sys
from typing import Any

import click

from omnifer.cli.common import (Context, bad_files_option, config_option, existing_ref,
                                make_config, pass_ctx)
from omnifer.cli.train_lines import epoch_line, generation_line, kind, summary, val_sources
from omnifer.train.config import ANCHOR_RULES, VAL_FROM, check_processes
from omnifer.train.config import TrainConfig as D


@click.command("train")
@click.option("--data", "data", default=None, callback=existing_ref,
              help="Labeled data: TOML spec, folder or manifest [default: the latest synth "
                   "run's labeled.toml].")
@click.option("--with", "extra", multiple=True, metavar="RUN_OR_PATH", callback=existing_ref,
              help="Add a data source (a mined or distilled run, or a path); repeatable.")
@click.option("--student", is_flag=True, help="Learn from ground truth and a teacher's soft labels.")
@click.option("--teacher", default=None, metavar="RUN", callback=existing_ref,
              help="Teacher train run or checkpoint [default with --student: the latest train run].")
@config_option
@click.option("--backbone", default=None,
              help=f"resnet18, resnet50, mobilenet_v3_small, mobilenet_v3_large, convnet [{D.backbone}].")
@click.option("--size", "input_size", type=int, default=None,
              help=f"Input size in pixels [{D.input_size}].")
@click.option("--tasks", default=None, help="Comma list of expression,va,au [default: all the data labels].")
@click.option("--va-head", type=click.Choice(["bins", "regress"]), default=None,
              help=f"Valence/arousal as bins or two regressed values [{D.va_head}].")
@click.option("--weights", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Local pretrained backbone weights (.safetensors/.pt); nothing is downloaded.")
@click.option("--epochs", type=int, default=None, help=f"Maximum epochs [{D.epochs}].")
@click.option("--batch-size", type=int, default=None, help=f"Batch size [{D.batch_size}].")
@click.option("--lr", type=float, default=None, help=f"Peak learning rate [{D.lr}].")
@click.option("--optimizer", type=click.Choice(["adamw", "adam"]), default=None)
@click.option("--balance", default=None,
              help="Comma list of expression,va,au to balance by sampling, or none "
                   f"[{','.join(D.balance)}].")
@click.option("--source-share", default=None, metavar="SOURCE=SHARE,...",
              help="Draw a source this share of each epoch, e.g. distilled=0.3 for a small "
                   "distilled set (the other sources keep their draws; the epoch grows).")
@click.option("--relabel", default=None, metavar="SOURCE,...",
              help="Student: the teacher labels these sources' faces again on every draw, as "
                   "random crops (a small distilled set seen many ways), e.g. distilled.")
@click.option("--patience", type=int, default=None,
              help=f"Early-stopping patience in epochs [{D.patience}].")
@click.option("--val-fraction", type=float, default=None,
              help=f"Validation share per source [{D.val_fraction}].")
@click.option("--val-from", type=click.Choice(VAL_FROM), default=None,
              help="Sources that give validation rows: all, or only those of --data (the --with "
                   "sources then only train, and scores compare with the teacher's) "
                   f"[{D.val_from}].")
@click.option("--ensemble", type=int, default=None, help=f"Train K members [{D.ensemble}].")
@click.option("--generations", type=int, default=None,
              help="Generations of ensembles: each after the first also learns from the previous "
                   f"one's mean soft labels [{D.generations}].")
@click.option("--kd-weight", type=float, default=None, help=f"Student: soft-label weight [{D.kd_weight}].")
@click.option("--gt-weight", type=float, default=None, help=f"Student: ground-truth weight [{D.gt_weight}].")
@click.option("--temperature", type=float, default=None,
              help=f"Distillation temperature [{D.temperature}].")
@click.option("--kd", default=None, metavar="output,structural",
              help="Student: distil the teacher's outputs, its embedding structure (Sinkhorn "
                   f"divergence of batch similarities) or both [{','.join(D.kd)}].")
@click.option("--structural-weight", type=float, default=None,
              help=f"Structural KD weight [{D.structural_weight}].")
@click.option("--anchors", type=int, default=None,
              help=f"Structural KD: anchors per batch [{D.anchors}].")
@click.option("--anchor-rule", type=click.Choice(ANCHOR_RULES), default=None,
              help=f"Structural KD: how anchors are picked [{D.anchor_rule}].")
@click.option("--sinkhorn-epsilon", type=float, default=None,
              help=f"Structural KD: entropic regularisation [{D.sinkhorn_epsilon}].")
@click.option("--sinkhorn-iterations", type=int, default=None,
              help=f"Structural KD: Sinkhorn iterations [{D.sinkhorn_iterations}].")
@click.option("--seed", type=int, default=None, help=f"Random seed [{D.seed}].")
@click.option("--device", default=None, help=f"auto, cpu, cuda or cuda:N [{D.device}].")
@bad_files_option
@click.option("--resume/--fresh", default=True, show_default=True,
              help="Continue an unfinished run with the same options after its last complete "
                   "epoch, or start a new run.")
@click.option("--nproc-per-node", type=click.IntRange(min=1), default=1,
              help="Train data-parallel in N processes on this machine (torchrun; one GPU "
                   "each); --batch-size is the global batch. [1]")
@pass_ctx
def command(ctx: Context, data: str | None, extra: tuple[str, ...], student: bool,
            teacher: str | None, config_file: str | None, on_bad_files: str | None,
            resume: bool, nproc_per_node: int, **options: Any) -> None:
    """Train the multitask FER model (expressions, valence/arousal, AUs) on partial labels."""
    from omnifer import pipeline
    from omnifer.pipeline import launch

    config = make_config(D, config_file, **options)
    if nproc_per_node > 1 and not launch.in_process_group():
        check_processes(config.batch_size, nproc_per_node)
        sys.exit(launch.torchrun(nproc_per_node, ctx.argv))
    lines_off = ctx.quiet or not launch.is_main()  # one process prints
    rec = pipeline.train(ctx.workspace, config, data=data, extra=extra, teacher=teacher,
                         student=student, on_bad_files=on_bad_files, resume=resume,
                         progress=ctx.progress if launch.is_main() else None,
                         on_epoch=None if lines_off else epoch_line,
                         on_generation=None if lines_off else generation_line)
    if not launch.is_main():
        return
    c = rec.counts
    lines = [f"trained {kind(rec, student)} {rec.ref}: "
             f"{len(rec.members)} member(s), {c['train']} train / {c['val']} validation samples"
             + val_sources(c.get("val_by_source", {}))
             + (f" ({c['draws_per_epoch']} drawn per epoch)"
                if c["draws_per_epoch"] != c["train"] else "")
             + f", {rec.train_seconds:.0f}s"]
    if rec.generations:
        lines.append(f"  {len(rec.generations)} generations: {rec.ref}@g0 .. "
                     f"{rec.ref}@g{len(rec.generations) - 1}; the run's members are the last's")
    for k, val in enumerate(rec.validation):
        lines.append(f"  member {k} validation: {summary(val)}"
                     + ("  (best: @best)" if rec.members[k] == rec.model and len(rec.members) > 1
                        else ""))
    if len(rec.members) > 1:
        lines.append(f"  ensemble validation: {summary(rec.ensemble_validation[-1])}")
    lines.append(ctx.next(f"evaluate {rec.ref}"))
    ctx.emit({"run": rec.ref, "members": rec.members, "best": rec.model,
              "generations": rec.generations, "validation": rec.validation,
              "ensemble_validation": rec.ensemble_validation,
              "counts": c, "seconds": rec.train_seconds}, "\n".join(lines))
