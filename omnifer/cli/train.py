"""``omnifer train``: a multitask teacher, a student of a teacher, or an ensemble of either."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from omnifer.cli.common import Context, pass_ctx
from omnifer.errors import OmniferError
from omnifer.workspace import Workspace


def default_data(ws: Workspace, data: str | None, output: str) -> str:
    """``data``, else the ``output`` (labeled or test) of the latest synth run."""
    if data:
        return data
    run = ws.latest("synth")
    if run is None or output not in run.outputs:
        raise OmniferError(
            f"no --data given and no synth run in workspace {ws.root}; pass --data SPEC "
            "(a TOML spec, folder or manifest) or run `omnifer synth demo/data` first"
        )
    return str(run.outputs[output])


def data_path(ws: Workspace, ref: str) -> Path:
    """A data path as given, or the dataset a run (``mine/ID``, ``distill/ID``) wrote."""
    path = Path(ref)
    if path.exists():
        return path
    run = ws.resolve(ref, "mine")
    if "dataset" not in run.outputs:
        raise OmniferError(
            f"run {run.stage}/{run.run_id} has no dataset output; pass a mine or distill run "
            "or a data path"
        )
    return Path(run.outputs["dataset"])


def read_data(ws: Workspace, ref: str, *, on_bad_files: str | None = None, progress=None):
    """A labeled set from a path (any reader, or a saved sample table) or a run with a dataset."""
    from omnifer.data import LabeledSet, read_labeled

    path = data_path(ws, ref)
    if path.suffix == ".parquet":
        try:
            return LabeledSet.load(path)
        except OmniferError:
            pass  # a plain manifest
    return read_labeled(path, on_bad_files=on_bad_files, progress=progress)


def cache_dir(ws: Workspace) -> Path:
    return ws.runs_dir.parent / "cache" / "images"


@click.command("train")
@click.option("--data", "data", default=None,
              help="Labeled data: TOML spec, folder or manifest [default: the latest synth "
                   "run's labeled.toml].")
@click.option("--with", "extra", multiple=True, metavar="RUN_OR_PATH",
              help="Add a data source (a mined or distilled run, or a path); repeatable.")
@click.option("--student", is_flag=True, help="Learn from ground truth and a teacher's soft labels.")
@click.option("--teacher", default=None, metavar="RUN",
              help="Teacher train run or checkpoint [default with --student: the latest train run].")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="TOML file of training options (flags given here override it).")
@click.option("--backbone", default=None,
              help="resnet18 (default), resnet50, mobilenet_v3_small, mobilenet_v3_large, convnet.")
@click.option("--size", "input_size", type=int, default=None, help="Input size in pixels [112].")
@click.option("--tasks", default=None, help="Comma list of expression,va,au [default: all the data labels].")
@click.option("--va-head", type=click.Choice(["bins", "regress"]), default=None,
              help="Valence/arousal as 2 x 20 bins (default) or two regressed values.")
@click.option("--weights", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Local pretrained backbone weights (.safetensors/.pt); nothing is downloaded.")
@click.option("--epochs", type=int, default=None, help="Maximum epochs [30].")
@click.option("--batch-size", type=int, default=None, help="Batch size [64].")
@click.option("--lr", type=float, default=None, help="Peak learning rate [1e-3].")
@click.option("--optimizer", type=click.Choice(["adamw", "adam"]), default=None)
@click.option("--balance", default=None,
              help="Comma list of expression,va,au to balance by sampling, or none [expression].")
@click.option("--source-share", default=None, metavar="SOURCE=SHARE,...",
              help="Draw a source this share of each epoch, e.g. distilled=0.3 for a small "
                   "distilled set (the other sources keep their draws; the epoch grows).")
@click.option("--patience", type=int, default=None, help="Early-stopping patience in epochs [5].")
@click.option("--val-fraction", type=float, default=None, help="Validation share per source [0.1].")
@click.option("--ensemble", type=int, default=None, help="Train K members [1].")
@click.option("--kd-weight", type=float, default=None, help="Student: soft-label weight [0.4].")
@click.option("--gt-weight", type=float, default=None, help="Student: ground-truth weight [0.6].")
@click.option("--temperature", type=float, default=None, help="Distillation temperature [2].")
@click.option("--seed", type=int, default=None, help="Random seed [0].")
@click.option("--device", default=None, help="auto (default), cpu, cuda or cuda:N.")
@click.option("--on-bad-files", type=click.Choice(["error", "warn", "skip"]), default=None)
@click.option("--resume/--fresh", default=True, show_default=True,
              help="Continue an unfinished run with the same options after its last complete "
                   "epoch, or start a new run.")
@pass_ctx
def command(ctx: Context, data: str | None, extra: tuple[str, ...], student: bool,
            teacher: str | None, config_file: str | None, on_bad_files: str | None,
            resume: bool, **options: Any) -> None:
    """Train the multitask FER model (expressions, valence/arousal, AUs) on partial labels."""
    from omnifer.data import combine
    from omnifer.train import TrainConfig, decoded_images, load_models, train

    ws = ctx.workspace
    config = TrainConfig.from_toml(config_file) if config_file else TrainConfig()
    config = config.replace(**options)
    if teacher and not student:
        raise OmniferError("--teacher needs --student; add --student to train a student")
    data = default_data(ws, data, "labeled")
    inputs: dict[str, Any] = {"data": data}
    teachers, teacher_ref = [], None
    if student:
        path = Path(teacher) if teacher and Path(teacher).exists() else \
            ws.resolve(teacher, "train", hint="train a teacher first: omnifer train").path
        teachers = load_models(path)
        teacher_ref = inputs["teacher"] = str(path)
    with ctx.progress("reading data", unit="img") as bar:
        sets = [read_data(ws, ref, on_bad_files=on_bad_files, progress=bar)
                for ref in (data, *extra)]
    labeled = combine(sets) if len(sets) > 1 else sets[0]
    with ctx.progress("decoding", unit="img") as bar:  # cached for later runs
        decoded_images(labeled, config.input_size, cache_dir(ws), progress=bar)
    for i, ref in enumerate(extra):
        inputs[f"with_{i}"] = data_path(ws, ref)
    run_config = {"train": dataclasses.asdict(config), "teacher": teacher_ref,
                  "data": [str(data_path(ws, d).resolve()) for d in (data, *extra)]}
    with ws.start_run("train", config=run_config, inputs=inputs, seed=config.seed,
                      device=config.device, resume=resume) as run:
        with ctx.progress("train", unit="step") as bar:
            result = train(labeled, run.path, config=config, cache_dir=cache_dir(ws),
                           teachers=teachers, progress=bar,
                           on_epoch=None if ctx.quiet else _epoch_line)
        run.complete(outputs={"model": str(result.members[0]),
                              "members": [str(m) for m in result.members]},
                     counts=result.counts, train_seconds=result.seconds)
        run.update(validation=result.validation, balance=result.balance)
    lines = [f"trained {'student' if student else 'teacher'} train/{run.run_id}: "
             f"{len(result.members)} member(s), {result.counts['train']} train / "
             f"{result.counts['val']} validation samples"
             + (f" ({result.counts['draws_per_epoch']} drawn per epoch)"
                if result.counts["draws_per_epoch"] != result.counts["train"] else "")
             + f", {result.seconds:.0f}s"]
    for k, val in enumerate(result.validation):
        lines.append(f"  member {k} validation: {_summary(val)}")
    lines.append(f"next: omnifer evaluate train/{run.run_id}")
    ctx.emit({"run": f"train/{run.run_id}", "members": result.members,
              "validation": result.validation, "counts": result.counts,
              "seconds": result.seconds}, "\n".join(lines))


def _summary(val: dict[str, Any]) -> str:
    parts = []
    if "expression" in val:
        e = val["expression"]
        parts.append(f"acc {e['accuracy']:.3f} macro-F1 {e['macro_f1']:.3f} "
                     f"ECE {e['ece_before']:.3f}->{e['ece_after']:.3f}")
    if "va" in val:
        parts.append(f"CCC V {val['va']['ccc_valence']:.3f} A {val['va']['ccc_arousal']:.3f}")
    if "au" in val:
        parts.append(f"AU F1 {val['au']['f1_mean']:.3f}")
    return "; ".join(parts) or "no validation split"


def _epoch_line(entry: dict[str, Any]) -> None:
    import sys

    from tqdm import tqdm

    val = "  ".join(f"{k} {v:.3f}" for k, v in entry.get("val", {}).items())
    tqdm.write(f"member {entry['member']} epoch {entry['epoch']}: loss "
               f"{entry['loss']['total']:.4f}  {val}{'  *' if entry['best'] else ''}", file=sys.stderr)
