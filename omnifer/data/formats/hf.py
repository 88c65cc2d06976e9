"""The ``hf`` format: a ``datasets.Dataset.save_to_disk`` folder (one split) with an ``Image``
column and label columns; a single ``ClassLabel`` column serves as the expression."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from omnifer.data.images import Unreadable, hf_ref, image_value_bytes
from omnifer.data.parse import LabelOrder, is_missing, parse_labels, resolve_columns
from omnifer.data.readers import Draft, Progress, default_name, finish, register_reader
from omnifer.data.table import LabeledSet
from omnifer.errors import OmniferError, one_line

log = logging.getLogger(__name__)


@register_reader("hf")
def read_hf(path: Path, *, name: str | None = None, tasks: frozenset[str] | None = None,
            label_order: LabelOrder = None, columns: Mapping[str, str] | None = None,
            weight: float = 1.0, on_bad_files: str | None = None,
            progress: Progress | None = None) -> LabeledSet:
    """A ``datasets.Dataset.save_to_disk`` folder with an ``Image`` column."""
    from datasets import load_from_disk
    from datasets import Image as HFImage

    from omnifer.data import images as _images

    root = os.path.abspath(path)
    if not os.path.isdir(root):
        raise OmniferError(f"{root} is not a folder; the hf format needs a save_to_disk folder")
    name = default_name(Path(root)) if name is None else name
    try:
        ds = load_from_disk(root)
    except FileNotFoundError as exc:
        raise OmniferError(
            f"{root} is not a saved datasets folder ({one_line(exc)}); write it with "
            "Dataset.save_to_disk"
        ) from None
    if not hasattr(ds, "features"):
        splits = list(ds)
        raise OmniferError(
            f"{root} holds several splits ({', '.join(splits)}); point to one split folder, "
            f"e.g. {os.path.join(root, splits[0])}"
        )
    _images.clear_hf_cache()  # load_image must see this version of the folder
    where = root
    feats = ds.features
    columns = dict(columns or {})
    default_expression(columns, feats, tasks)
    roles = resolve_columns(list(ds.column_names), columns, tasks, where)
    image_cols = [c for c, f in feats.items() if isinstance(f, HFImage)]
    col = roles.get("image")
    if col is None:
        if len(image_cols) != 1:
            raise OmniferError(
                f"{where} has {len(image_cols)} Image columns ({', '.join(image_cols) or 'none'}); "
                "name one with columns={'image': '<column>'}"
            )
        col = image_cols[0]
    elif col not in image_cols:
        raise OmniferError(
            f"{where} column {col!r} is {feats[col]!r}, not an Image feature; cast it with "
            "dataset.cast_column(column, datasets.Image()) before save_to_disk"
        )
    roles["image"] = col
    label_cols = [c for r, c in roles.items() if r != "image"]
    if not label_cols:
        log.warning("%s: %s has no label columns; its samples carry no labels", name, where)
    df = ds.select_columns(label_cols).to_pandas() if label_cols else pd.DataFrame(index=range(len(ds)))
    declares_contempt = class_label_names(df, roles, feats, where)
    labels = parse_labels(df, roles, label_order=label_order, where=where)
    n = len(ds)
    ref_col = col if len(image_cols) > 1 else None
    refs = [hf_ref(root, i, ref_col) for i in range(n)]
    images_ds = ds.select_columns([col]).with_format("arrow")

    def fetch(rows: list[int]) -> list[bytes | str]:
        values = images_ds[rows].column(col).to_pylist()
        out: list[bytes | str] = []
        for v in values:
            try:
                out.append(image_value_bytes(v, base=root))
            except FileNotFoundError:
                missing = v.get("path") if isinstance(v, dict) else None
                out.append(Unreadable(
                    f"image file not found: {os.path.join(root, missing)}" if missing
                    else "no image in this row"))
            except OSError as exc:
                out.append(Unreadable(f"cannot read the image ({one_line(exc)})"))
        return out

    draft = Draft(
        source=name,
        refs=refs,
        images=fetch,
        where=lambda i: (where, i),
        expression=labels["expression"],
        valence=labels["valence"],
        arousal=labels["arousal"],
        au=labels["au"],
        reasons=labels["reasons"],
        declares_contempt=declares_contempt,
    )
    return finish(draft, weight=weight, on_bad_files=on_bad_files, progress=progress)


def default_expression(columns: dict[str, str], feats: Any,
                       tasks: frozenset[str] | None) -> None:
    """Map ``expression`` to the only ``ClassLabel`` column (e.g. the conventional ``label``)
    when no column is named ``expression`` and ``columns`` names none."""
    from datasets import ClassLabel

    class_labels = [c for c, f in feats.items() if isinstance(f, ClassLabel)]
    if ("expression" not in columns and "expression" not in feats and len(class_labels) == 1
            and (tasks is None or "expression" in tasks)):
        columns["expression"] = class_labels[0]


def class_label_names(df: pd.DataFrame, roles: Mapping[str, str], feats: Any,
                      where: str) -> bool:
    """Turn a ``ClassLabel`` expression column of ``df`` into names (-1: missing), in place;
    returns whether its names include contempt."""
    from datasets import ClassLabel, Value

    if "expression" not in roles:
        return False
    feat = feats[roles["expression"]]
    if isinstance(feat, ClassLabel):
        names = list(feat.names)

        def to_name(v: Any) -> Any:
            if is_missing(v) or int(v) == -1:
                return None
            return names[int(v)] if 0 <= int(v) < len(names) else int(v)

        df[roles["expression"]] = df[roles["expression"]].map(to_name).astype(object)
        return any(n.strip().lower() == "contempt" for n in names)
    if not isinstance(feat, Value):
        raise OmniferError(
            f"{where} column {roles['expression']!r} is {feat!r}; expression needs a "
            "ClassLabel, integers or names"
        )
    return False
