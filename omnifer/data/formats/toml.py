"""The ``toml`` format (also ``spec``): a description of several labeled databases, read into
one ``LabeledSet``.

```toml
on_bad_files = "warn"          # optional, default "error"

[[database]]
name = "expr"                  # source name (default: the folder / file name)
path = "labeled/expr"          # relative to this file
format = "folder"              # folder | csv | parquet | hf (inferred when omitted)
tasks = ["expression"]         # optional subset of expression, va, au
label_order = "canonical"      # optional: numbering of integer expression labels
weight = 1.0                   # optional sample weight of this source
columns = { image = "file" }   # optional renames: omnifer name = source column
```
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omnifer.data.badfiles import check_policy
from omnifer.data.parse import LabelOrder
from omnifer.data.readers import Progress, default_name, read_labeled, register_reader
from omnifer.data.table import LabeledSet, combine
from omnifer.errors import OmniferError, one_line

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: Keys allowed at the top level of a description.
SPEC_KEYS: tuple[str, ...] = ("database", "on_bad_files")
#: Keys allowed in a ``[[database]]`` entry.
DATABASE_KEYS: tuple[str, ...] = ("name", "path", "format", "tasks", "label_order", "weight",
                                  "columns")


@register_reader("spec")
@register_reader("toml")
def read_toml(path: Path, *, name: str | None = None, tasks: Iterable[str] | None = None,
              label_order: LabelOrder = None, columns: Mapping[str, str] | None = None,
              weight: float = 1.0, on_bad_files: str | None = None,
              progress: Progress | None = None) -> LabeledSet:
    """:func:`read_spec`; the per-database arguments belong in the file's ``[[database]]``."""
    extra = {k: v for k, v in (("name", name), ("tasks", tasks), ("label_order", label_order),
                               ("columns", columns)) if v is not None}
    if weight != 1.0:
        extra["weight"] = weight
    if extra:
        raise OmniferError(
            f"{', '.join(extra)} cannot be given with a TOML description ({path}); set them "
            "per [[database]] in the file"
        )
    return read_spec(path, on_bad_files=on_bad_files, progress=progress)


def read_spec(
    toml_path: str | os.PathLike,
    *,
    on_bad_files: str | None = None,
    progress: Progress | None = None,
) -> LabeledSet:
    """Read every ``[[database]]`` of a TOML description and combine them.

    ``on_bad_files`` overrides the file's own top-level ``on_bad_files`` (default ``error``).
    """
    path = Path(os.path.abspath(os.path.expanduser(os.fspath(toml_path))))
    if not path.is_file():
        raise OmniferError(f"data description {path} does not exist; check the path")
    try:
        with open(path, "rb") as fh:
            spec = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise OmniferError(f"{path} is not valid TOML ({one_line(exc)}); fix the syntax") from None
    except UnicodeDecodeError:
        raise OmniferError(f"{path} is not UTF-8 text; save it as UTF-8") from None
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise OmniferError(
            f"{path} has unknown top-level keys {', '.join(unknown)}; valid keys are "
            f"{', '.join(SPEC_KEYS)} (databases go in [[database]] tables)"
        )
    if on_bad_files is not None:
        policy = check_policy(on_bad_files)
    else:
        value = spec.get("on_bad_files", "error")
        if not isinstance(value, str):
            raise OmniferError(f"{path}: on_bad_files = {value!r} must be error, warn or skip")
        policy = check_policy(value)
    entries = spec.get("database")
    if not entries:
        raise OmniferError(
            f"{path} lists no databases; add [[database]] tables with at least a path"
        )
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise OmniferError(
            f"{path}: database must be an array of tables; write each as [[database]]"
        )

    sets: list[LabeledSet] = []
    names: dict[str, str] = {}
    done_before = 0
    for number, entry in enumerate(entries, start=1):
        where = f"{path} [[database]] #{number}"
        _check_entry(entry, where)
        db_path = Path(os.path.expanduser(entry["path"]))
        if not db_path.is_absolute():
            db_path = path.parent / db_path
        fmt = entry.get("format")
        if fmt is not None and str(fmt).strip().lower() in ("toml", "spec") or (
                fmt is None and db_path.suffix.lower() == ".toml"):
            raise OmniferError(
                f"{where} points to another TOML description ({db_path}); list its databases "
                "in this file instead"
            )
        name = entry.get("name") or default_name(db_path)
        if name in names:
            raise OmniferError(
                f"{where} reuses the database name {name!r} (also used by {names[name]}); give "
                "each [[database]] its own name"
            )
        names[name] = where

        sub_progress = None
        if progress is not None:
            def sub_progress(done: int, total: int, _before: int = done_before) -> None:
                progress(_before + done, _before + total)

        part = read_labeled(
            db_path,
            format=fmt,
            name=name,
            tasks=entry.get("tasks"),
            label_order=entry.get("label_order"),
            weight=entry.get("weight", 1.0),
            columns=entry.get("columns"),
            on_bad_files=policy,
            progress=sub_progress,
        )
        done_before += len(part) + len(part.bad)
        sets.append(part)
    return combine(sets)


def _check_entry(entry: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(entry) - set(DATABASE_KEYS))
    if unknown:
        raise OmniferError(
            f"{where} has unknown keys {', '.join(unknown)}; valid keys are "
            f"{', '.join(DATABASE_KEYS)}"
        )
    if "path" not in entry:
        raise OmniferError(f"{where} has no path; add path = \"<folder or file>\"")
    checks = {
        "path": (lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string"),
        "name": (lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string"),
        "format": (lambda v: isinstance(v, str), "a string (folder, csv, parquet or hf)"),
        "tasks": (lambda v: isinstance(v, str) or (isinstance(v, list) and all(
            isinstance(t, str) for t in v)), "a list of task names, e.g. [\"expression\"]"),
        "label_order": (lambda v: isinstance(v, (str, dict)),
                        "a dataset name such as \"rafdb\" or a table { 0 = \"neutral\", ... }"),
        "weight": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
                   "a number such as 1.0"),
        "columns": (lambda v: isinstance(v, dict) and all(isinstance(c, str) for c in v.values()),
                    "a table such as { image = \"file\" }"),
    }
    for key, (ok, expected) in checks.items():
        if key in entry and not ok(entry[key]):
            raise OmniferError(f"{where}: {key} = {entry[key]!r} must be {expected}")
