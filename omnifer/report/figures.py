"""The report's own figures, from plain arrays: the best and borderline mined faces of each
class, and a 2-D map (PCA) of embeddings by group."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from omnifer.plots import figure, save_png

#: colours of the embedding map's groups (others get matplotlib's cycle)
COLOURS = {"labeled": "#1f77b4", "mined": "#2ca02c", "rejected": "#a8a8a8",
           "distractors": "#d62728"}
#: faces paired with their score
Faces = list[tuple[np.ndarray, float]]


def mined_faces_sheet(rows: list[tuple[str, Faces, Faces]], path: str | os.PathLike, *,
                      cell: int = 64) -> Path:
    """A PNG with one row per class: its label, its best faces (highest score) and its
    borderline ones (lowest score), each captioned with its score. ``rows``: (label, best,
    borderline), faces as RGB uint8 arrays."""
    from PIL import Image, ImageDraw, ImageFont

    from omnifer.artifacts import atomic_path

    font = ImageFont.load_default(size=13)
    n = max([len(b) for _, b, _ in rows] + [len(w) for _, _, w in rows] + [1])
    label_w, cap, pad, gap, head = 110, 16, 4, 28, 24
    block = n * (cell + pad)
    width = label_w + 2 * block + gap
    height = head + len(rows) * (cell + cap + pad) + pad
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for x, text in ((label_w, "best (highest score)"),
                    (label_w + block + gap, "borderline (lowest score)")):
        draw.text((x, 4), text, fill=(30, 30, 30), font=font)
    for r, (label, best, borderline) in enumerate(rows):
        y = head + r * (cell + cap + pad)
        draw.text((4, y + cell // 2 - 8), label[:14], fill=(0, 0, 0), font=font)
        for x0, faces in ((label_w, best), (label_w + block + gap, borderline)):
            for k, (face, score) in enumerate(faces):
                x = x0 + k * (cell + pad)
                im = Image.fromarray(np.asarray(face, np.uint8)).convert("RGB")
                sheet.paste(im.resize((cell, cell), Image.BILINEAR), (x, y))
                draw.text((x + 2, y + cell + 1), f"{score:.3f}", fill=(60, 60, 60), font=font)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return Path(path)


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, the 2 principal axes [2, D], their shares of the variance) of the rows of ``x``."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    axes = np.zeros((2, x.shape[1]))
    axes[: min(2, len(vt))] = vt[:2]
    var = s ** 2
    share = np.zeros(2)
    share[: min(2, len(var))] = var[:2] / var.sum() if var.sum() > 0 else 0.0
    return mean, axes, share


def embedding_map(groups: dict[str, np.ndarray], path: str | os.PathLike, *,
                  max_points: int = 3000, seed: int = 0,
                  totals: dict[str, int] | None = None) -> Path:
    """A scatter of the groups' embeddings (``name -> [N, D]``) on their first two principal
    components, at most ``max_points`` per group (a seeded random subset). ``totals``: the
    size of each group when ``groups`` holds a subset of it already."""
    rng = np.random.default_rng(seed)
    shown: dict[str, tuple[np.ndarray, int]] = {}
    for name, x in groups.items():
        x = np.asarray(x, np.float32)
        if len(x) > max_points:
            x = x[np.sort(rng.choice(len(x), max_points, replace=False))]
        shown[name] = (x, (totals or {}).get(name, len(groups[name])))
    points = [x for x, _ in shown.values() if len(x)]
    if not points:
        raise ValueError("no embeddings to map")
    mean, axes, share = pca_2d(np.concatenate(points))
    fig = figure(8, 6)
    ax = fig.add_subplot()
    size = 8 if sum(len(p) for p in points) > 2000 else 22
    order = sorted(shown, key=lambda g: ["rejected", "labeled", "mined", "distractors"].index(g)
                   if g in COLOURS else len(COLOURS))
    for name in order:
        x, total = shown[name]
        if not len(x):
            continue
        xy = (x - mean) @ axes.T
        label = f"{name} ({total})" if len(x) == total else f"{name} ({len(x)} of {total})"
        ax.scatter(xy[:, 0], xy[:, 1], s=size, c=COLOURS.get(name), alpha=0.65,
                   linewidths=0, label=label)
    ax.set_xlabel(f"PC 1 ({share[0]:.0%} of the variance)")
    ax.set_ylabel(f"PC 2 ({share[1]:.0%} of the variance)")
    ax.legend(loc="best", markerscale=2.5 if size < 10 else 1.2, frameon=True)
    ax.grid(alpha=0.25)
    return save_png(fig, path)
