"""Contact sheets: PNG grids of the labeled faces and test faces (by class) and of the pool
(by kind), each image captioned with its label."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np

from omnifer.artifacts import atomic_path
from omnifer.labels import EXPRESSIONS
from omnifer.synth.config import SynthConfig
from omnifer.synth.faces import N_CLASSES
from omnifer.synth.sampling import POOL_KINDS
from omnifer.synth.tables import concat


def write_contact_sheets(out: Path, config: SynthConfig, split_rows: Callable[[str], list[dict]],
                         per_class: int = 4) -> list[Path]:
    """Write ``contact_labeled.png``, ``contact_test.png`` and ``contact_pool.png`` (those whose
    split has images); return their paths."""
    from PIL import Image, ImageDraw

    s = config.size
    cap = 12
    paths = []

    def sheet(name: str, cells: list[tuple[str, bytes | Path]], ncols: int) -> None:
        if not cells:
            return
        nrows = -(-len(cells) // ncols)
        img = Image.new("RGB", (ncols * s, nrows * (s + cap)), (255, 255, 255))
        d = ImageDraw.Draw(img)
        for k, (text, src) in enumerate(cells):
            x, y = (k % ncols) * s, (k // ncols) * (s + cap)
            with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as face:
                img.paste(face.convert("RGB"), (x, y))
            d.text((x + 2, y + s), text[: max(4, s // 6)], fill=(0, 0, 0))
        path = out / name
        with atomic_path(path) as tmp:
            img.save(tmp, format="PNG")
        paths.append(path)

    def by_class(chunks: list[dict], root: Path) -> list[tuple[str, Path]]:
        if not chunks:
            return []
        files, expr = concat(chunks, "file"), concat(chunks, "expression")
        cells = []
        for row in range(per_class):
            for c in range(N_CLASSES):
                idx = np.flatnonzero(expr == c)
                if row < len(idx):
                    cells.append((EXPRESSIONS[c], root / files[idx[row]]))
        return cells

    sheet("contact_labeled.png", by_class(split_rows("expr"), out), N_CLASSES)
    sheet("contact_test.png", by_class(split_rows("test"), out), N_CLASSES)
    po = split_rows("pool")
    if po:
        files, kind = concat(po, "file"), concat(po, "kind")
        expr, expr2 = concat(po, "expression"), concat(po, "expression2")
        cells = []
        for k, kname in enumerate(POOL_KINDS):
            for i in np.flatnonzero(kind == k)[: (N_CLASSES * 2 if k == 0 else N_CLASSES)]:
                if kname == "nonface":
                    text = "nonface"
                elif kname == "blend":
                    text = f"{EXPRESSIONS[expr[i]][:4]}+{EXPRESSIONS[expr2[i]][:4]}"
                elif kname == "occluded":
                    text = f"occ {EXPRESSIONS[expr[i]]}"
                else:
                    text = EXPRESSIONS[expr[i]]
                cells.append((text, out / files[i]))
        sheet("contact_pool.png", cells, N_CLASSES)
    return paths
