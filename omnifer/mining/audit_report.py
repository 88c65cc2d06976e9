"""What ``omnifer audit`` writes: the table (one row per labeled face, Parquet and CSV), the
contact sheet of the top suspects and a short Markdown report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omnifer.artifacts import atomic_path, atomic_write_text
from omnifer.mining.audit import AuditConfig, AuditResult, Matches, suspects

CELL = 88  #: contact-sheet face size in pixels
CAPTION = 26  #: two caption lines under each face
COLUMNS = 8


def audit_table(result: AuditResult, labeled: Any, classes: Sequence[str], *,
                test: Any = None) -> Any:
    """pandas table, one row per face of ``labeled`` in its order (columns: docs/audit.md)."""
    import pandas as pd

    t = labeled.table
    names = np.array(list(classes) + [None], dtype=object)  # index -1 -> None
    out = pd.DataFrame({
        "sample_id": t["sample_id"].to_numpy(), "image": t["image"].to_numpy(),
        "source": t["source"].to_numpy(), "fold": result.fold,
        "given": names[result.given], "suggested": names[result.suggested],
        "given_evidence": result.evidence_of(result.given),
        "suggested_evidence": result.evidence_of(result.suggested),
        "label_score": result.label_score, "label_issue": result.label_issue,
        "kth_similarity": result.kth_similarity,
        "outlier_score": (1.0 - result.kth_similarity).astype(np.float32),
        "outlier": result.outlier,
    })
    _matches(out, "duplicate", result.duplicates, t, len(t))
    n_test = 0 if test is None else len(test)
    _matches(out, "test_duplicate", result.test_duplicates,
             None if test is None else test.table, max(n_test, 1))
    out["test_duplicate_mirrored"] = result.test_duplicates.of >= max(n_test, 1)
    return out


def _matches(out: Any, prefix: str, m: Matches, other: Any, n: int) -> None:
    found = m.found
    at = np.where(found, m.of % n, 0)
    for col in ("sample_id", "image", "source"):
        values = np.full(len(found), None, dtype=object)
        if other is not None and found.any():
            values[found] = other[col].to_numpy()[at[found]]
        name = f"{prefix}_of" if col == "sample_id" else f"{prefix}_{col}"
        out[name] = values
    out[f"{prefix}_cosine"] = m.cosine
    out[f"{prefix}_bits"] = m.bits
    out[prefix] = found


def write_outputs(run_dir: str | Path, table: Any, result: AuditResult, labeled: Any,
                  classes: Sequence[str], *, config: AuditConfig, test: Any = None,
                  inputs: dict[str, str]) -> dict[str, str]:
    """Write ``audit.parquet``, ``audit.csv``, ``suspects.png`` (when there is a suspect and
    ``config.suspects`` > 0) and ``report.md``; return their paths by output name."""
    out = Path(run_dir)
    files = {"table": out / "audit.parquet", "csv": out / "audit.csv"}
    with atomic_path(files["table"]) as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_path(files["csv"]) as tmp:
        table.to_csv(tmp, index=False)
    picked = suspects(result, config.suspects)
    if sum(len(v) for v in picked.values()):
        files["sheet"] = contact_sheet(out / "suspects.png", picked, table, labeled, test)
    atomic_write_text(out / "report.md", markdown(result, table, config=config, inputs=inputs,
                                                  picked=picked))
    files["report"] = out / "report.md"
    return {k: str(v) for k, v in files.items()}


def contact_sheet(path: Path, picked: dict[str, np.ndarray], table: Any, labeled: Any,
                  test: Any) -> Path:
    """A PNG grid: one section per kind of suspect, each face captioned; a duplicate is shown
    beside the face it copies."""
    from PIL import Image, ImageDraw

    from omnifer.data.images import decode_image

    refs = table["image"].to_numpy()
    sections: list[tuple[str, list[tuple[str, str, str]]]] = []
    cells = [(f"{table['given'].iat[i][:5]}>{table['suggested'].iat[i][:5]}",
              f"{table['label_score'].iat[i]:+.2f} {table['source'].iat[i]}", refs[i])
             for i in picked["label"]]
    sections.append(("likely label errors: given > suggested, label score", cells))
    cells = []
    for i in picked["duplicate"]:
        cross = bool(table["duplicate"].iat[i])
        key = "duplicate" if cross else "test_duplicate"
        other = table[f"{key}_image"].iat[i]
        cells.append((str(table["source"].iat[i]), f"cos {table[f'{key}_cosine'].iat[i]:.3f}",
                      refs[i]))
        cells.append((str(table[f"{key}_source"].iat[i]), f"{table[f'{key}_bits'].iat[i]} bits",
                      other))
    sections.append(("near duplicates: face, then its copy", cells))
    cells = [(str(table["source"].iat[i]), f"kth cos {table['kth_similarity'].iat[i]:.3f}",
              refs[i]) for i in picked["outlier"]]
    sections.append(("outliers: cosine of the k-th nearest labeled face", cells))
    sections = [s for s in sections if s[1]]
    header = 16
    height = sum(header + -(-len(c) // COLUMNS) * (CELL + CAPTION) for _, c in sections)
    sheet = Image.new("RGB", (COLUMNS * CELL, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    y = 0
    for title, cells in sections:
        draw.text((3, y + 2), title, fill=(160, 0, 0))
        y += header
        for j, (top, bottom, ref) in enumerate(cells):
            x, yy = (j % COLUMNS) * CELL, y + (j // COLUMNS) * (CELL + CAPTION)
            sheet.paste(Image.fromarray(decode_image(ref, CELL)), (x, yy))
            draw.text((x + 2, yy + CELL), top[:15], fill=(0, 0, 0))
            draw.text((x + 2, yy + CELL + 12), bottom[:15], fill=(80, 80, 80))
        y += -(-len(cells) // COLUMNS) * (CELL + CAPTION)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path


def summary_lines(result: AuditResult, config: AuditConfig) -> list[str]:
    """The report's first lines (also printed by the CLI)."""
    c = result.counts
    cut = result.outlier_cut
    return [
        f"{c['faces']} labeled faces audited, {c['scored']} of them with a cross-fitted "
        "expression label",
        f"likely label errors: {c['label_issues']} ({config.label_score} score >= "
        f"{config.label_cut:g}, k={config.k}, {config.folds} folds)",
        f"outliers: {c['outliers']} (k-th neighbour cosine below "
        f"{'-inf' if not np.isfinite(cut) else format(cut, '.3f')}, the "
        f"{config.outlier_quantile:g} quantile)",
        f"near duplicates across databases: {c['duplicates']}; of evaluation faces: "
        f"{c['test_duplicates']} (cosine >= {config.duplicate_threshold:g} or hash within "
        f"{config.hash_distance} bits)",
    ]


def markdown(result: AuditResult, table: Any, *, config: AuditConfig, inputs: dict[str, str],
             picked: dict[str, np.ndarray], top: int = 20) -> str:
    lines = ["# Label audit", ""]
    lines += [f"- {line}" for line in summary_lines(result, config)]
    lines += ["", "Inputs: " + ", ".join(f"{k} `{v}`" for k, v in inputs.items()), "",
              f"Label-issue score: {config.score} class evidence of the k nearest labeled faces "
              "in the other folds; `margin` = best other class's evidence - the given class's, "
              "`confidence` = 1 - the given class's share of the evidence. Columns and cuts: "
              "docs/audit.md.", ""]
    issue = picked["label"][:top]
    if len(issue):
        lines += ["## Top likely label errors", "",
                  "| image | source | given | suggested | label score | given / suggested "
                  "evidence |", "|---|---|---|---|---|---|"]
        for i in issue:
            r = table.iloc[i]
            lines.append(f"| `{r['image']}` | {r['source']} | {r['given']} | {r['suggested']} "
                         f"| {r['label_score']:+.3f} | {r['given_evidence']:.3f} / "
                         f"{r['suggested_evidence']:.3f} |")
        lines.append("")
    dup = np.flatnonzero(table["duplicate"].to_numpy() | table["test_duplicate"].to_numpy())
    if len(dup):
        lines += ["## Near duplicates", "", "| image | copy | cosine | hash bits |",
                  "|---|---|---|---|"]
        for i in dup[:top]:
            r = table.iloc[i]
            key = "duplicate" if r["duplicate"] else "test_duplicate"
            lines.append(f"| `{r['image']}` | `{r[f'{key}_image']}` | {r[f'{key}_cosine']:.4f} "
                         f"| {r[f'{key}_bits']} |")
        lines.append("")
    odd = picked["outlier"][:top]
    if len(odd):
        lines += ["## Outliers", "", "| image | source | k-th cosine |", "|---|---|---|"]
        lines += [f"| `{table['image'].iat[i]}` | {table['source'].iat[i]} | "
                  f"{table['kth_similarity'].iat[i]:.3f} |" for i in odd]
        lines.append("")
    return "\n".join(lines)
