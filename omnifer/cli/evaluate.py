"""``omnifer evaluate RUN --data SPEC``: per-task metrics, calibration and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from omnifer.cli.common import Context, pass_ctx
from omnifer.cli.train import cache_dir, default_data, read_data


@click.command("evaluate")
@click.argument("run_ref", required=False, metavar="[RUN]")
@click.option("--data", default=None,
              help="Labeled test data [default: the latest synth run's test.toml].")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--on-bad-files", type=click.Choice(["error", "warn", "skip"]), default=None)
@pass_ctx
def command(ctx: Context, run_ref: str | None, data: str | None, batch_size: int, device: str,
            on_bad_files: str | None) -> None:
    """Evaluate a train run (all ensemble members) or a checkpoint on labeled data."""
    from omnifer.train import decoded_images, evaluate_models, load_models, resolve_device

    ws = ctx.workspace
    path = Path(run_ref) if run_ref and Path(run_ref).exists() else \
        ws.resolve(run_ref, "train", hint="train a model first: omnifer train").path
    dev = resolve_device(device)
    models = load_models(path, device=dev)
    data = default_data(ws, data, "test")
    with ctx.progress("reading data", unit="img") as bar:
        labeled = read_data(ws, data, on_bad_files=on_bad_files, progress=bar)
    config = {"model": str(path.resolve()), "data": str(Path(data).resolve())}
    with ws.start_run("evaluate", config=config, inputs={"model": path, "data": data},
                      device=str(dev), resume=False) as run:
        with ctx.progress("decoding", unit="img") as bar:
            images = decoded_images(labeled, models[0].config.input_size, cache_dir(ws),
                                    progress=bar)
        result = evaluate_models(models, labeled, images, run.path, device=dev,
                                 batch_size=batch_size)
        run.complete(outputs=result["files"], counts={"samples": len(labeled)})
    ctx.emit({"run": f"evaluate/{run.run_id}", "model": str(path), **result},
             "\n".join([f"evaluated {path} on {data} ({len(labeled)} samples, "
                        f"{len(models)} member(s)); run evaluate/{run.run_id}",
                        *report_lines(result)]))


def report_lines(r: dict[str, Any]) -> list[str]:
    lines = []
    if "expression" in r:
        e = r["expression"]
        lines += [
            f"  expression  n={e['n']}  accuracy {e['accuracy']:.4f}  macro-F1 {e['macro_f1']:.4f}"
            f"  ABAW {e['abaw']:.4f}  (chance: acc {e['chance']['accuracy']:.3f}, "
            f"F1 {e['chance']['macro_f1']:.3f})",
            f"  calibration ECE {e['ece_before']:.4f} -> {e['ece_after']:.4f}   "
            f"NLL {e['nll_before']:.4f} -> {e['nll_after']:.4f}  (temperature scaling)",
            "  F1 per class: " + "  ".join(f"{k} {v:.3f}" for k, v in e["f1_per_class"].items()),
        ]
    if "va" in r:
        v = r["va"]
        lines.append(f"  valence/arousal  n={v['n']}  CCC valence {v['ccc_valence']:.4f}  "
                     f"arousal {v['ccc_arousal']:.4f}  mean {v['ccc_mean']:.4f}  (chance 0)")
    if "au" in r:
        a = r["au"]
        lines.append(f"  AUs  n={a['n']}  mean F1 {a['f1_mean']:.4f}  "
                     f"(chance: always present {a['chance']['f1_mean']:.3f})")
        lines.append("  F1 per AU: " + "  ".join(f"{k} {v:.3f}" for k, v in a["f1_per_au"].items()))
    lines += [f"  wrote {v}" for v in r.get("files", {}).values()]
    return lines
