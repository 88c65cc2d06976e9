"""What ``omnifer train`` prints: the kind of run, validation summaries, per-epoch and
per-generation lines."""

from __future__ import annotations

import sys
from typing import Any

from omnifer.cli.common import num


def kind(rec: Any, student: bool) -> str:
    if rec.generations:
        return f"{len(rec.generations)} generations of ensembles"
    return "student" if student else "teacher"


def summary(val: dict[str, Any]) -> str:
    parts = []
    if "expression" in val:
        e = val["expression"]
        parts.append(f"acc {num(e['accuracy'], '.3f')} macro-F1 {num(e['macro_f1'], '.3f')} "
                     f"ECE {num(e['ece_before'], '.3f')}->{num(e['ece_after'], '.3f')} "
                     f"NLL {num(e['nll_after'], '.3f')}")
    if "va" in val:
        parts.append(f"CCC V {num(val['va']['ccc_valence'], '.3f')} "
                     f"A {num(val['va']['ccc_arousal'], '.3f')}")
    if "au" in val:
        parts.append(f"AU F1 {num(val['au']['f1_mean'], '.3f')}")
    return "; ".join(parts) or "no validation split"


def val_sources(by_source: dict[str, int]) -> str:
    """`` (validation: 100 db-a, 100 db-b, 853 mined)``: where the validation rows come from,
    when from more than one source (a score partly on a mined set's pseudo-labels is not one
    on ground truth)."""
    if len(by_source) < 2:
        return ""
    return " (validation: " + ", ".join(f"{n} {s}" for s, n in by_source.items()) + ")"


def epoch_line(entry: dict[str, Any]) -> None:
    from tqdm import tqdm

    val = "  ".join(f"{k} {v:.3f}" for k, v in entry.get("val", {}).items())
    gen = f"generation {entry['generation']} " if "generation" in entry else ""
    tqdm.write(f"{gen}member {entry['member']} epoch {entry['epoch']}: loss "
               f"{entry['loss']['total']:.4f}  {val}{'  *' if entry['best'] else ''}",
               file=sys.stderr)


def generation_line(entry: dict[str, Any]) -> None:
    from tqdm import tqdm

    tqdm.write(f"generation {entry['generation']} done ({entry['members']} members, "
               f"{entry['seconds']:.0f}s): ensemble {summary(entry['ensemble'])}",
               file=sys.stderr)
