"""The mining report: per-class counts, score histograms, the held-out precision/coverage curve
(PNG) and a short Markdown summary."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omnifer.artifacts import atomic_write_text
from omnifer.mining.mine import MineConfig, MineResult
from omnifer.plots import figure, save_png

SIMILARITY = "cosine similarity of L2-normalised embeddings"


def write_report(result: MineResult, out_dir: str | Path, *, classes: Sequence[str],
                 config: MineConfig, inputs: dict[str, str]) -> dict[str, str]:
    """Write ``histograms.png``, ``precision_coverage.png``, ``out_of_distribution.png`` and
    ``report.md``; return paths."""
    out = Path(out_dir)
    files = {"histograms": str(histograms(result, out / "histograms.png", classes)),
             "precision_coverage": str(precision_coverage(result, out / "precision_coverage.png")),
             "out_of_distribution": str(out_of_distribution(result,
                                                            out / "out_of_distribution.png"))}
    atomic_write_text(out / "report.md", markdown(result, classes=classes, config=config,
                                                  inputs=inputs))
    files["report"] = str(out / "report.md")
    return files


def histograms(result: MineResult, path: Path, classes: Sequence[str]) -> Path:
    """Per class: evidence of the candidates whose best class it is, mined ones highlighted."""
    ev = result.evidence
    best = ev.scores[np.arange(len(ev.rows)), ev.best] if len(ev.rows) else np.zeros(0)
    mined = np.isin(ev.rows, result.rows)
    cols = 4
    rows = -(-len(classes) // cols)
    fig = figure(3.2 * cols, 2.4 * rows)
    lo = min(float(best.min()) if len(best) else 0.0, float(np.min(result.thresholds[
        np.isfinite(result.thresholds)], initial=1.0)))
    bins = np.linspace(lo, 1.0, 41)
    for c, name in enumerate(classes):
        ax = fig.add_subplot(rows, cols, c + 1)
        sel = ev.best == c
        ax.hist(best[sel & ~mined], bins=bins, color="#bbbbbb", label="not mined")
        ax.hist(best[sel & mined], bins=bins, color="#2a7ab9", label="mined")
        if np.isfinite(result.thresholds[c]):
            ax.axvline(result.thresholds[c], color="#d62728", lw=1)
        ax.set_title(f"{name}: {int((result.labels == c).sum())} mined", fontsize=9)
        ax.tick_params(labelsize=7)
    fig.axes[0].legend(fontsize=7)
    fig.suptitle("Best-class evidence of candidate pool faces (red: threshold)", fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


def out_of_distribution(result: MineResult, path: Path) -> Path:
    """Each out-of-distribution score of the pool's candidates (of the occlusion check: the
    faces it checked) against the labeled faces' own, with the cut below which pool faces are
    rejected."""
    cal, ev = result.calibration, result.evidence
    panels = [(f"{result_k(result)}-th labeled neighbour's cosine", cal.kth,
               ev.neighbour_scores[:, -1] if len(ev.rows) else np.zeros(0), result.ood_cut)]
    if cal.norm is not None and result.candidate_norms is not None:
        panels.append(("feature norm", cal.norm, result.candidate_norms, result.norm_cut))
    if result.occlusion is not None:
        panels.append(("weakest activation region (mined faces)", *result.occlusion))
    fig = figure(4.2 * len(panels), 3.2)
    for i, (title, labeled, pool, cut) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        values = np.concatenate([labeled, pool]).astype(np.float64)
        values = values[np.isfinite(values)]
        bins = np.linspace(values.min(), values.max(), 41) if len(values) else 10
        ax.hist(pool, bins=bins, density=True, color="#bbbbbb", label="pool candidates")
        ax.hist(labeled, bins=bins, density=True, histtype="step", color="#2a7ab9", lw=1.5,
                label="labeled faces")
        if np.isfinite(cut):
            ax.axvline(cut, color="#d62728", lw=1, label=f"cut {cut:.3g}")
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle("Out of distribution: pool faces below a cut are not mined", fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


def precision_coverage(result: MineResult, path: Path) -> Path:
    """Held-out precision against coverage as a global threshold falls; the run's point."""
    curve = result.calibration.curve()
    fig = figure(5, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(curve["coverage"], curve["precision"], color="#2a7ab9")
    est = result.estimate
    if est["precision"] is not None:
        ax.plot([est["coverage"]], [est["precision"]], "o", color="#d62728",
                label=f"this run: precision {est['precision']:.3f}, coverage {est['coverage']:.3f}")
        ax.legend(fontsize=8, loc="lower left")
    ax.set_xlabel("coverage (share of held-out labeled faces mined)")
    ax.set_ylabel("precision")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title("Held-out precision / coverage", fontsize=10)
    return save_png(fig, path)


def summary_lines(result: MineResult, classes: Sequence[str]) -> list[str]:
    """The numbers people look at first, one line each (printed and in report.md)."""
    c = result.counts
    est = result.estimate
    lines = [f"similarity: {SIMILARITY} ({result.search} search)",
             f"mined {c['mined']} of {c['pool']} pool faces ({c['mined'] / max(c['pool'], 1):.1%}); "
             f"{c['candidates']} candidates, {c['passed']} passed threshold/margin/votes, "
             f"{c['capped']} dropped by caps"]
    norm = (f"; {c['ood_low_feature_norm']} whose feature norm is below the labeled faces' "
            f"at the cut (< {result.norm_cut:.2f})" if np.isfinite(result.norm_cut) else "")
    lines.append(f"out of distribution: {c['ood_rejected']} faces that would have been mined "
                 f"were rejected: {c['ood_far_from_labeled']} whose {result_k(result)}-th labeled "
                 "neighbour is less similar than the labeled faces' own at the cut (cosine < "
                 f"{result.ood_cut:.3f}){norm}")
    lines.append(f"near duplicates: {c['duplicates_merged']} mined faces are near duplicates of "
                 "a better-scored mined face; each cluster counted once toward caps and balance")
    lines.append(f"leak guard: {c['leak_near_duplicates']} pool faces are near duplicates of "
                 f"evaluation images or their mirror images; {c['leak_excluded']} faces that "
                 f"would have been mined were dropped ({c.get('leak_excluded_hash', 0)} of them "
                 "found by perceptual hash)")
    prec = "n/a" if est["precision"] is None else f"{est['precision']:.3f}"
    if est.get("interval"):
        low, high = est["interval"]
        prec += f" ({est['confidence']:.0%} interval {low:.3f}-{high:.3f})"
    lines.append(f"calibration estimate: precision {prec}, coverage {est['coverage']:.3f} "
                 f"({est['kept']} of {est['held_out']} cross-fitted labeled faces)")
    for name, why in zip(classes, result.left_out):
        if why is not None:
            lines.append(f"{name} was not mined: {why}")
    lines += result.notes
    if result.recall is not None:
        r = result.recall
        rec = "n/a" if r["recall"] is None else f"{r['recall']:.4f}"
        lines.append(f"index recall against exact mining: {rec} on a sample of {r['sample']} "
                     f"pool faces ({r['exact_selected']} mined exactly)")
    return lines


def result_k(result: MineResult) -> int:
    return int(result.neighbour_scores.shape[1]) if result.neighbour_scores.ndim == 2 else 0


def class_rows(result: MineResult, classes: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for i, name in enumerate(classes):
        sel = result.labels == i
        per = result.estimate["per_class"][i]
        rows.append({"class": name, "threshold": float(result.thresholds[i]),
                     "mined": int(sel.sum()),
                     "mean_score": float(result.scores[sel].mean()) if sel.any() else None,
                     "held_out_precision": per["precision"], "held_out_kept": per["kept"],
                     "held_out_interval": per.get("interval"),
                     "duplicates_merged": int((result.duplicate_of[sel] >= 0).sum()),
                     "left_out": result.left_out[i]})
    return rows


def markdown(result: MineResult, *, classes: Sequence[str], config: MineConfig,
             inputs: dict[str, str]) -> str:
    def fmt(v: Any) -> str:
        return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    score = "prototypes" if config.prototypes else f"{config.score} of k={config.k}"
    out = ["# Mining report", "",
           *[f"- {line}" for line in summary_lines(result, classes)],
           f"- evidence: {score}; margin {config.margin}; min votes {config.min_votes}"
           + (f"; target precision {config.target_precision} at confidence {config.confidence}"
              if config.calibrating else ""),
           *[f"- {k}: `{v}`" for k, v in inputs.items()], "",
           "| class | threshold | mined | near duplicates | mean score | calibration precision "
           "| interval | calibration faces |", "|---|---|---|---|---|---|---|---|"]
    for r in class_rows(result, classes):
        t = "not mined" if not np.isfinite(r["threshold"]) else fmt(r["threshold"])
        iv = r["held_out_interval"]
        iv = "-" if iv is None else f"{iv[0]:.3f}-{iv[1]:.3f}"
        out.append(f"| {r['class']} | {t} | {r['mined']} | {r['duplicates_merged']} | "
                   f"{fmt(r['mean_score'])} | {fmt(r['held_out_precision'])} | {iv} | "
                   f"{r['held_out_kept']} |")
    out += ["", "Calibration precision is measured on the labeled faces, each mined against the "
            f"other {config.folds - 1} of {config.folds} folds as if unlabeled; the interval is "
            f"two-sided Clopper-Pearson at {config.confidence:g}. Pool faces that differ from the "
            "labeled ones (other domains, blends, distractors) can make the real precision "
            "lower.", "",
            "![score histograms](histograms.png)", "",
            "![precision/coverage](precision_coverage.png)", "",
            "![out of distribution](out_of_distribution.png)", ""]
    return "\n".join(out)
