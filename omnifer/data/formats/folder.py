"""The ``folder`` format: ``ROOT/<expression name>/**/<image>``, expression labels from the
class-folder names (numbered folders need a ``label_order``).

What cannot be read as an image file below a class folder (an unreadable folder, a name that is
not UTF-8, a broken symlink, a symlink loop, a FIFO) is a bad row under ``on_bad_files``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from omnifer.artifacts import walk_files
from omnifer.data.images import IMAGE_EXTENSIONS
from omnifer.data.parse import LabelOrder, folder_label
from omnifer.data.readers import Draft, Progress, default_name, finish, register_reader
from omnifer.data.table import LabeledSet
from omnifer.errors import OmniferError
from omnifer.labels import EXPRESSIONS_WITH_CONTEMPT, NOT_AN_EXPRESSION

log = logging.getLogger(__name__)


@register_reader("folder")
def read_folder(path: Path, *, name: str | None = None, tasks: frozenset[str] | None = None,
                label_order: LabelOrder = None, columns: Mapping[str, str] | None = None,
                weight: float = 1.0, on_bad_files: str | None = None,
                progress: Progress | None = None) -> LabeledSet:
    """``ROOT/<expression name>/**/<image>``: expression labels from the class-folder names."""
    root = Path(os.path.abspath(path))
    if not root.is_dir():
        raise OmniferError(f"{root} is not a folder; the folder format needs ROOT/<class>/<image>")
    name = default_name(root) if name is None else name
    if columns:
        raise OmniferError(f"columns= does not apply to a class-folder tree ({root}); drop it")
    if tasks is not None and tasks != {"expression"}:
        raise OmniferError(
            f"{root} is a class-folder tree, which carries expression labels only; tasks "
            f"{sorted(tasks)} asks for more or other tasks (use tasks = [\"expression\"])"
        )
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise OmniferError(
            f"{root} has no class folders; put images in ROOT/<expression>/ "
            f"(e.g. {root / 'happiness'})"
        )
    files: list[str] = []
    labels: list[int] = []
    reasons: list[str | None] = []
    declares_contempt = False
    for d in class_dirs:
        idx = folder_label(d.name, label_order)
        if idx is None:
            if (isinstance(label_order, str) and d.name.strip().lstrip("-").isdigit()
                    and int(d.name) in NOT_AN_EXPRESSION.get(label_order.lower(), ())):
                log.warning("%s: folder %s is not an expression in the %s order; skipped",
                            name, d.name, label_order)
                continue
            raise OmniferError(
                f"class folder {d.name!r} in {root} is not an expression; name the folders "
                f"{', '.join(EXPRESSIONS_WITH_CONTEMPT)} (or synonyms such as happy, angry, sad)"
                + ("" if label_order else ", or numbers with label_order set")
            )
        declares_contempt |= EXPRESSIONS_WITH_CONTEMPT[idx] == "contempt"
        found = _images_below(d)
        files.extend(found)
        labels.extend([idx] * len(found))
        reasons.extend(found.values())
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if loose:
        log.warning("%s: %d images directly in %s have no class folder and are ignored",
                    name, len(loose), root)
    if not files:
        raise OmniferError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) below the class folders of {root}"
        )
    n = len(files)
    draft = Draft(
        source=name,
        refs=files,
        images=lambda rows: [files[i] for i in rows],
        where=lambda i: (files[i], None),
        expression=np.asarray(labels, dtype=np.int16),
        valence=np.full(n, np.nan, dtype=np.float32),
        arousal=np.full(n, np.nan, dtype=np.float32),
        reasons=reasons,
        declares_contempt=declares_contempt,
    )
    return finish(draft, weight=weight, on_bad_files=on_bad_files, progress=progress)


def _images_below(folder: Path) -> dict[str, str | None]:
    """``{path: None}`` of the image files below ``folder``, then ``{path: why it cannot be
    read}`` of the image names and folders that are not readable files."""
    def image(rel: str) -> bool:
        return os.path.splitext(rel)[1].lower() in IMAGE_EXTENSIONS

    skipped: list[tuple[str, str]] = []
    out: dict[str, str | None] = {os.path.join(folder, rel): None
                                  for rel in walk_files(folder, skipped=skipped) if image(rel)}
    out.update((os.path.join(folder, rel), reason) for rel, reason in skipped
               if rel.endswith("/") or image(rel))
    return out
