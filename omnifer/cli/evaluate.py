"""``omnifer evaluate RUN --data SPEC``: per-task metrics, calibration and plots."""

from __future__ import annotations

from typing import Any

import click

from omnifer.cli.common import (Context, bad_files_option, config_option, existing_ref,
                                make_config, num, pass_ctx)
from omnifer.train.config import EvaluateConfig as D


@click.command("evaluate")
@click.argument("run_ref", required=False, metavar="[RUN]", callback=existing_ref)
@click.option("--data", default=None, callback=existing_ref,
              help="Labeled test data [default: the latest synth run's test.toml].")
@config_option
@click.option("--batch-size", type=int, default=None, help=f"Batch size [{D.batch_size}].")
@click.option("--device", default=None, help=f"auto, cpu, cuda or cuda:N [{D.device}].")
@click.option("--mc-dropout", type=int, default=None, metavar="N",
              help="Monte-Carlo dropout: N passes per member with dropout on the heads "
                   f"[{D.mc_dropout}: off].")
@click.option("--mc-rate", type=float, default=None,
              help="Dropout rate of those passes [default: the model's own].")
@click.option("--ood", multiple=True, metavar="PATH", callback=existing_ref,
              help="Images, folders or videos with no training face: report how well each "
                   "out-of-distribution score tells them from the test set; repeatable.")
@bad_files_option
@pass_ctx
def command(ctx: Context, run_ref: str | None, data: str | None, config_file: str | None,
            ood: tuple[str, ...], **options: Any) -> None:
    """Evaluate a train run (all ensemble members) or a checkpoint on labeled data."""
    from omnifer import pipeline

    rec = pipeline.evaluate(ctx.workspace, make_config(D, config_file, **options),
                            model=run_ref, data=data, ood=ood, progress=ctx.progress)
    files = {k: str(v) for k, v in rec.run.outputs.items()}
    model, data = (ctx.workspace.locate(rec.inputs[k]["path"]) for k in ("model", "data"))
    ctx.emit({"run": rec.ref, "model": model, **rec.results, "files": files},
             "\n".join([f"evaluated {model} on {data} ({rec.counts['samples']} samples, "
                        f"{rec.members} member(s)); run {rec.ref}",
                        *report_lines(rec.results), *[f"  wrote {v}" for v in files.values()]]))


def report_lines(r: dict[str, Any]) -> list[str]:
    lines = []
    if "expression" in r:
        e = r["expression"]
        lines += [
            f"  expression  n={e['n']}  accuracy {num(e['accuracy'])}  macro-F1 "
            f"{num(e['macro_f1'])}  ABAW {num(e['abaw'])}  (always the majority class: acc "
            f"{num(e['majority']['accuracy'], '.3f')}, F1 {num(e['majority']['macro_f1'], '.3f')})",
            f"  calibration ECE {num(e['ece_before'])} -> {num(e['ece_after'])}   "
            f"NLL {num(e['nll_before'])} -> {num(e['nll_after'])}   Brier "
            f"{num(e.get('brier_before'))} -> {num(e.get('brier_after'))}  (temperature scaling)",
            "  F1 per class: " + "  ".join(f"{k} {num(v, '.3f')}"
                                           for k, v in e["f1_per_class"].items()),
        ]
    if "uncertainty" in r:
        u = r["uncertainty"]
        lines.append("  uncertainty (mean, 0..1): " + "  ".join(
            f"{t} total {num(u[f'{t}_total'], '.3f')} aleatoric {num(u[f'{t}_aleatoric'], '.3f')} "
            f"epistemic {num(u[f'{t}_epistemic'], '.3f')}"
            for t in ("expression", "va", "au") if f"{t}_total" in u))
    for where, found in r.get("ood", {}).items():
        lines.append(f"  out of distribution: {where}: " + "  ".join(
            f"{name} AUROC {num(s['auroc'], '.3f')} FPR95 {num(s['fpr95'], '.3f')}"
            for name, s in found.items()))
    if "va" in r:
        v = r["va"]
        lines.append(f"  valence/arousal  n={v['n']}  CCC valence {num(v['ccc_valence'])}  "
                     f"arousal {num(v['ccc_arousal'])}  mean {num(v['ccc_mean'])}  (chance 0)")
    if "au" in r:
        a = r["au"]
        lines.append(f"  AUs  n={a['n']}  mean F1 {num(a['f1_mean'])}  "
                     f"(chance: always present {num(a['chance']['f1_mean'], '.3f')})")
        lines.append("  F1 per AU: " + "  ".join(f"{k} {num(v, '.3f')}"
                                               for k, v in a["f1_per_au"].items()))
    return lines
