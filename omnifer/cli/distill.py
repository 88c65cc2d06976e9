"""``omnifer distill --images-per-class 10``: compress a mined set into a few synthetic images per
class; ``omnifer distill evaluate RUN``: train fresh networks on them against coreset baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from omnifer.cli.common import Context, embed_images, pass_ctx
from omnifer.cli.train import cache_dir, data_path, default_data, read_data
from omnifer.errors import OmniferError


@click.group("distill", invoke_without_command=True)
@click.option("--images-per-class", "ipc", type=int, default=10, show_default=True)
@click.option("--from", "source_ref", default=None, metavar="RUN_OR_PATH",
              help="Data to distil [default: the latest mine run's dataset].")
@click.option("--with-labeled", is_flag=True, help="Add the labeled set to the source.")
@click.option("--labeled", default=None, help="Labeled data for --with-labeled [default: the "
              "latest synth run's labeled.toml].")
@click.option("--method", default="dm", show_default=True,
              help="dm (distribution matching), gm (gradient matching) or tm (trajectories).")
@click.option("--size", type=int, default=32, show_default=True, help="Image side in pixels.")
@click.option("--iterations", type=int, default=None,
              help="Image updates [dm 1000 (500 on CPU), gm 200, tm 500].")
@click.option("--lr-images", type=float, default=None, help="Learning rate of the pixels.")
@click.option("--soft-labels", is_flag=True, help="Learn soft labels too (gm, tm).")
@click.option("--width", type=int, default=None,
              help="Channels of the ConvNets that distil and evaluate [128 on GPU, 32 on CPU].")
@click.option("--batch-real", type=int, default=None,
              help="dm, gm: real images per class per step [128 on GPU, 64 on CPU].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--resume/--fresh", default=True, show_default=True,
              help="Continue an unfinished run with the same options from its last checkpoint.")
@click.pass_context
def command(click_ctx: click.Context, **options: Any) -> None:
    """Distil the mined set into --images-per-class synthetic images per class."""
    if click_ctx.invoked_subcommand is None:
        _distill(click_ctx.find_object(Context), **options)


def _source(ctx: Context, ws: Any, source_ref: str | None, with_labeled: bool,
            labeled: str | None) -> tuple[Any, str]:
    """The expression-labeled rows to distil, and the reference they came from."""
    from omnifer.data import combine

    if source_ref is None:
        source_ref = str(ws.resolve(None, "mine", hint="mine the pool first: omnifer mine "
                                    "--threshold 0.9 (or pass --from DATA)").outputs["dataset"])
    with ctx.progress("reading data", unit="img") as bar:
        data = read_data(ws, source_ref, progress=bar)
        if with_labeled:
            data = combine([data, read_data(ws, default_data(ws, labeled, "labeled"),
                                            progress=bar)])
    has = data.masks()["expression"]
    if not has.any():
        raise OmniferError(f"{source_ref} has no expression labels to distil; pass a mined or "
                           "labeled set with --from")
    return data.subset(has), str(data_path(ws, source_ref))


def as_arrays(ws: Any, data: Any, size: int, progress: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Images float32 [N, 3, size, size] in [0, 1] and expression labels int64 [N]."""
    from omnifer.train import decoded_images

    images = decoded_images(data, size, cache_dir(ws), progress=progress)
    x = np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
    return x, data.table["expression"].to_numpy(np.int64)


def _distill(ctx: Context, *, ipc: int, source_ref: str | None, with_labeled: bool,
             labeled: str | None, method: str, size: int, iterations: int | None,
             lr_images: float | None, soft_labels: bool, width: int | None,
             batch_real: int | None, seed: int, device: str, resume: bool) -> None:
    from omnifer.distill import distill, train_experts
    from omnifer.distill.methods import get_method
    from omnifer.models import resolve_device

    get_method(method)  # an unknown method fails before anything is read
    if ipc < 1:
        raise OmniferError(f"--images-per-class is {ipc}; use at least 1")
    ws = ctx.workspace
    data, ref = _source(ctx, ws, source_ref, with_labeled, labeled)
    classes = data.expressions
    counts = np.bincount(data.table["expression"].to_numpy(np.int64), minlength=len(classes))
    present = np.flatnonzero(counts)  # a class the source lacks is left out, not invented
    if len(present) < len(classes):
        import logging

        logging.getLogger(__name__).warning(
            "%s has no image of %s; distilling the other classes (add --with-labeled to cover "
            "them)", ref, ", ".join(classes[c] for c in np.flatnonzero(counts == 0)))
    c = int(present[counts[present].argmin()])
    if ipc > counts[c]:
        raise OmniferError(
            f"--images-per-class {ipc} is more than class {classes[c]!r} has ({counts[c]} "
            f"images in {ref}); use at most {counts[c]}, add the labeled set (--with-labeled) or "
            "mine more faces (omnifer mine with a lower --threshold)"
        )
    gpu = resolve_device(device).type == "cuda"  # CPU defaults keep a run to minutes
    width = width or (128 if gpu else 32)
    batch_real = batch_real or (128 if gpu else 64)
    if iterations is None and method == "dm" and not gpu:
        iterations = 500
    options = {"batch_real": batch_real} if method in ("dm", "gm") else None
    config = {"method": method, "images_per_class": ipc, "size": size, "iterations": iterations,
              "width": width, "options": options,
              "lr_images": lr_images, "soft_labels": soft_labels, "seed": seed,
              "source": ref, "with_labeled": with_labeled,
              "labeled": default_data(ws, labeled, "labeled") if with_labeled else None}
    with ws.start_run("distill", config=config, inputs={"source": ref}, seed=seed,
                      device=device, resume=resume) as run:
        with ctx.progress("decoding", unit="img") as bar:
            x, y = as_arrays(ws, data, size, bar)
        y = np.searchsorted(present, y)  # classes of the source, renumbered
        experts = None
        if method == "tm":
            with ctx.progress("expert trajectories", unit="expert") as bar:
                experts = train_experts(x, y, n_classes=len(present), seed=seed, width=width,
                                        cache_dir=ws.runs_dir.parent / "cache" / "experts",
                                        device=device, progress=lambda d, t, *_: bar(d, t))
        with ctx.progress(f"distilling ({method})", unit="it") as bar:
            result = distill(x, y, n_classes=len(present), method=method, images_per_class=ipc,
                             iterations=iterations, lr_images=lr_images, soft_labels=soft_labels,
                             width=width, options=options, seed=seed, device=device, checkpoint=run.path / "checkpoint.pt",
                             experts=experts, progress=lambda d, t, info: bar(d, t))
        dataset, grid = write_distilled(result, run.path, classes=classes, present=present,
                                        aus=data.aus)
        run.complete(outputs={"dataset": str(dataset), "grid": str(grid)},
                     counts={"source": len(data), "distilled": len(result.labels)},
                     distill_seconds=result.seconds)
        run.update(method=method, iterations=result.iterations, final_loss=result.history[-1],
                   width=width, normalisation={"mean": result.mean, "std": result.std})
    ctx.emit({"run": f"distill/{run.run_id}", "dataset": str(dataset), "grid": str(grid),
              "method": method, "iterations": result.iterations, "seconds": result.seconds},
             "\n".join([
                 f"distill/{run.run_id}: {len(result.labels)} synthetic images ({ipc} per class, "
                 f"{size} px) from {len(data)} images by {method}, {result.iterations} "
                 f"iterations in {result.seconds:.0f}s",
                 f"  wrote {dataset} and {grid}",
                 f"next: omnifer distill evaluate distill/{run.run_id} --baselines, or omnifer "
                 f"train --student --with distill/{run.run_id}"]))


def write_distilled(result: Any, out: Path, *, classes: Any, present: np.ndarray,
                    aus: Any) -> tuple[Path, Path]:
    """PNG per image, a sample table (soft labels as ``soft_<class>`` columns) and a grid;
    ``result`` labels index ``present`` (the classes distilled) of ``classes``."""
    import pandas as pd
    from PIL import Image

    from omnifer.artifacts import atomic_path, content_id
    from omnifer.data import LabeledSet
    from omnifer.data.table import make_table
    from omnifer.plots import figure, save_png

    pixels = np.clip(np.rint(result.images.transpose(0, 2, 3, 1) * 255), 0, 255).astype(np.uint8)
    labels = present[result.labels]
    paths, ids = [], []
    for k, (img, c) in enumerate(zip(pixels, labels)):
        path = out / "images" / classes[c] / f"{k:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Image.fromarray(img).save(tmp, format="PNG")
        paths.append(str(path))
        ids.append(content_id(path.read_bytes()))
    n = len(paths)
    nan = np.full(n, np.nan, np.float32)
    table = make_table(sample_id=ids, image=paths, source="distilled",
                       expression=labels, valence=nan, arousal=nan,
                       au={a: nan for a in aus}, weight=1.0)
    extra = None
    if result.soft_labels is not None:
        soft = np.zeros((n, len(classes)), np.float32)
        soft[:, present] = result.soft_labels
        extra = pd.DataFrame({f"soft_{c}": soft[:, i] for i, c in enumerate(classes)})
    dataset = LabeledSet(table=table, expressions=tuple(classes), aus=tuple(aus),
                         sources=("distilled",)).save(out / "distilled.parquet", extra=extra)
    ipc = n // len(present)
    fig = figure(1.0 * ipc + 1.2, 1.0 * len(present))
    for k, img in enumerate(pixels):
        ax = fig.add_subplot(len(present), ipc, k + 1)
        ax.imshow(img)
        ax.set_xticks([])
        ax.set_yticks([])
        if k % ipc == 0:
            ax.set_ylabel(classes[labels[k]], fontsize=8)
    fig.suptitle(f"{result.method}: {ipc} images per class", fontsize=10)
    return dataset, save_png(fig, out / "grid.png")


@command.command("evaluate")
@click.argument("run_ref", required=False, metavar="[RUN]")
@click.option("--baselines", is_flag=True,
              help="Also random, herding and k-center subsets of the same size, and full data.")
@click.option("--test", "test_ref", default=None,
              help="Labeled test data [default: the latest synth run's test.toml].")
@click.option("--seeds", type=int, default=5, show_default=True)
@click.option("--epochs", type=int, default=300, show_default=True,
              help="Training epochs of every arm (the same recipe for all).")
@click.option("--full-epochs", type=int, default=None,
              help="Epochs of the full-data arm [--epochs]; fewer keeps a CPU run short.")
@click.option("--device", default="auto", show_default=True)
@pass_ctx
def evaluate(ctx: Context, run_ref: str | None, baselines: bool, test_ref: str | None,
             seeds: int, epochs: int, full_epochs: int | None, device: str) -> None:
    """Train fresh networks only on a distilled set (and baselines); test them."""
    from omnifer.artifacts import atomic_write_json
    from omnifer.data import LabeledSet
    from omnifer.distill import evaluate_sets, select_coreset

    ws = ctx.workspace
    run = ws.resolve(run_ref, "distill", hint="distil first: omnifer distill --images-per-class 10")
    cfg = run.config
    size, ipc = cfg["size"], cfg["images_per_class"]
    distilled = LabeledSet.load(run.outputs["dataset"])
    with ctx.progress("reading test data", unit="img") as bar:
        test = read_data(ws, default_data(ws, test_ref, "test"), progress=bar)
    learned = np.unique(distilled.table["expression"].to_numpy(np.int64))
    has = test.masks()["expression"]  # the classes the distilled set has, not the others
    test = test.subset(has & np.isin(test.table["expression"].to_numpy(np.int64, na_value=-1),
                                     learned))
    with ctx.progress("decoding", unit="img") as bar:
        def arrays(data: Any) -> tuple[np.ndarray, np.ndarray]:  # labels renumbered to learned
            x, y = as_arrays(ws, data, size, bar)
            return x, np.searchsorted(learned, y)

        sets: dict[str, Any] = {f"distilled ({cfg['method']})": arrays(distilled)}
        test_xy = arrays(test)
        if baselines:
            source, _ = _source(ctx, ws, cfg["source"], cfg["with_labeled"], cfg.get("labeled"))
            source = source.subset(np.isin(source.table["expression"].to_numpy(np.int64), learned))
            x, y = arrays(source)
    train_run = ws.resolve(None, "train") if baselines else ws.latest("train")
    agree = {}  # the share of each set's images the primitive model gives their label
    if train_run is not None:
        agree[next(iter(sets))] = agreement(ws, train_run.path, distilled, device)
    if baselines:
        emb = embed_images(ctx, ws, source, Path(train_run.outputs["model"]), device,
                           "embedding source images")
        agrees = agreement(ws, train_run.path, source, device, mean=False)
        for name in ("random", "herding", "k-center"):
            idx = select_coreset(name, emb.astype(np.float32), y, ipc, seed=0)
            sets[name] = (x[idx], y[idx])
            agree[name] = float(agrees[idx].mean())
        sets["full data"] = (x, y)
        agree["full data"] = float(agrees.mean())
    norm = run.manifest["normalisation"]  # the real data's, for every arm
    full_epochs = full_epochs or epochs
    results: dict[str, Any] = {}
    for full_arm, n_epochs in ((False, epochs), (True, full_epochs)):
        group = {k: v for k, v in sets.items() if (k == "full data") == full_arm}
        if group:
            with ctx.progress(f"training ({n_epochs} epochs)", unit="net") as bar:
                results.update(evaluate_sets(
                    group, test_xy,
                    n_classes=len(learned), seeds=seeds, epochs=n_epochs, device=device,
                    width=run.manifest["width"], mean_std=(norm["mean"], norm["std"]),
                    progress=lambda d, t, info: bar(d, t)))
    for name, share in agree.items():
        results[name]["model_agreement"] = share
    full = results.get("full data", {}).get("mean")
    chance = 1 / len(learned)  # no set above 1.5x chance: these networks did not learn the task
    near_chance = max(r["mean"] for r in results.values()) < 1.5 * chance
    atomic_write_json(run.path / "evaluation.json", {"seeds": seeds, "epochs": epochs,
                                                     "full_epochs": full_epochs,
                                                     "near_chance": near_chance,
                                                     "results": results})
    lines = [f"distill/{run.run_id}: {seeds} fresh networks per set, {epochs} epochs"
             + (f" ({full_epochs} for full data)" if baselines and full_epochs != epochs else "")
             + f", tested on {len(test)} faces of its {len(learned)} classes",
             "  set                   images  accuracy          macro-F1          of full  seconds"
             "  model agrees"]
    for name, r in results.items():
        n = len(sets[name][1])
        share = f"{r['mean'] / full:7.1%}" if full else "      -"
        agrees_col = (f"{r['model_agreement']:12.1%}" if "model_agreement" in r
                      else "           -")
        lines.append(f"  {name:<21} {n:>6}  {r['mean']:.4f} +- {r['std']:.4f}  "
                     f"{np.mean(r['macro_f1']):.4f} +- {np.std(r['macro_f1']):.4f}  {share}  "
                     f"{r['seconds']:7.1f}  {agrees_col}")
    if near_chance:
        lines.append(f"  note: no set scores above 1.5x chance ({chance:.1%}): the fresh networks "
                     "did not learn the task from these images, so the sets cannot be compared "
                     "this way; compare 'model agrees'")
    run.update(evaluation={k: {"mean": v["mean"], "std": v["std"]} for k, v in results.items()})
    ctx.emit({"run": f"distill/{run.run_id}", "results": results, "test_faces": len(test),
              "epochs": epochs, "full_epochs": full_epochs, "near_chance": near_chance},
             "\n".join(lines))


def agreement(ws: Any, model_run: Path, data: Any, device: str, mean: bool = True) -> Any:
    """Whether the primitive model classifies each image of ``data`` as its label (the share
    when ``mean``): synthetic images it does not recognise teach a FER network little."""
    from omnifer.train import decoded_images, load_models, resolve_device
    from omnifer.train.evaluate import ensemble, predict
    from omnifer.train.images import BatchMaker

    dev = resolve_device(device)
    models = load_models(model_run, device=dev)
    cfg = models[0].config
    maker = BatchMaker(decoded_images(data, cfg.input_size, cache_dir(ws)), mean=cfg.mean,
                       std=cfg.std, device=dev)
    rows = np.arange(len(data))
    probs = ensemble(models, [predict(m, maker, rows) for m in models])["expression_probs"]
    predicted = np.asarray(cfg.expressions)[probs.argmax(1)]
    same = predicted == np.asarray(data.expressions)[data.table["expression"].to_numpy(np.int64)]
    return float(same.mean()) if mean else same
