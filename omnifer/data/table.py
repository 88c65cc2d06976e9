"""The sample table every reader returns: :class:`LabeledSet`, plus :func:`combine`.

A ``LabeledSet`` is a pandas table with one row per sample (columns and dtypes in
``docs/data-format.md``) and the label vocabularies that give its columns meaning. Missing
labels are ``<NA>``/NaN in the table and explicit masks everywhere else; ``arrays()`` hands
out zero-filled values *with* masks so that no missing value reaches a loss as a number.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omnifer.errors import OmniferError, one_line
from omnifer.labels import EXPRESSIONS, EXPRESSIONS_WITH_CONTEMPT, au_names

#: Columns before the AU columns, and the one after them.
HEAD_COLUMNS: tuple[str, ...] = ("sample_id", "image", "source", "expression", "valence", "arousal")
TAIL_COLUMNS: tuple[str, ...] = ("weight",)

#: Key of the Parquet schema metadata that carries the vocabularies.
METADATA_KEY = b"omnifer.labeled_set"
#: Version of that metadata's layout.
METADATA_VERSION = 1

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class BadFile:
    """A row a reader dropped: where it was and why."""

    source: str  #: database name
    path: str  #: the image file, or the manifest / dataset directory for a table row
    reason: str  #: one line: what was wrong and the value seen
    row: int | None = None  #: 0-based data row of a manifest or ``hf`` dataset

    @property
    def location(self) -> str:
        return self.path if self.row is None else f"{self.path} row {self.row}"

    def __str__(self) -> str:
        return f"{self.source}: {self.location}: {self.reason}"


def columns_for(aus: Sequence[str]) -> list[str]:
    """The table's column names for an AU vocabulary, in order."""
    return [*HEAD_COLUMNS, *aus, *TAIL_COLUMNS]


def expression_vocabulary(has_contempt: bool) -> tuple[str, ...]:
    return EXPRESSIONS_WITH_CONTEMPT if has_contempt else EXPRESSIONS


def make_table(
    *, sample_id: Sequence[str], image: Sequence[str], source: Sequence[str] | str,
    expression: np.ndarray, valence: np.ndarray, arousal: np.ndarray,
    au: Mapping[str, np.ndarray], weight: np.ndarray | float,
) -> pd.DataFrame:
    """Build a table with the declared dtypes.

    ``expression`` is an integer array with ``-1`` (or any negative value) for missing, or a
    nullable integer array; ``valence``/``arousal``/``au`` are floats with NaN for missing.
    """
    n = len(sample_id)
    expr = pd.Series(pd.array(expression, dtype="Int16") if n else pd.array([], dtype="Int16"))
    expr[expr.lt(0).fillna(False).to_numpy(bool)] = pd.NA
    if isinstance(source, str):
        source = [source] * n
    data: dict[str, Any] = {
        "sample_id": pd.Series(list(sample_id), dtype=str),
        "image": pd.Series(list(image), dtype=str),
        "source": pd.Series(list(source), dtype=str),
        "expression": expr,
        "valence": pd.Series(np.asarray(valence, dtype=np.float32)),
        "arousal": pd.Series(np.asarray(arousal, dtype=np.float32)),
    }
    for name in au_names(au):
        data[name] = pd.Series(np.asarray(au[name], dtype=np.float32))
    data["weight"] = pd.Series(np.broadcast_to(np.asarray(weight, dtype=np.float32), (n,)).copy())
    return pd.DataFrame(data)


@dataclass(frozen=True, eq=False)
class LabeledSet:
    """Labeled samples from one or more databases, with partial labels and their masks.

    ``expression`` holds indices into ``expressions`` (the canonical order, with ``contempt``
    appended only when a source has it); ``aus`` names the AU columns, sorted by AU number;
    ``bad`` lists the rows the readers dropped; ``sources`` names the databases in order.
    """

    table: pd.DataFrame
    expressions: tuple[str, ...] = EXPRESSIONS
    aus: tuple[str, ...] = ()
    bad: tuple[BadFile, ...] = ()
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "expressions", tuple(self.expressions))
        object.__setattr__(self, "aus", tuple(self.aus))
        object.__setattr__(self, "bad", tuple(self.bad))
        object.__setattr__(self, "sources", tuple(self.sources))
        if self.expressions not in (EXPRESSIONS, EXPRESSIONS_WITH_CONTEMPT):
            raise OmniferError(
                f"expression vocabulary {list(self.expressions)} is not the canonical order; "
                f"use {list(EXPRESSIONS)} (+ 'contempt')"
            )
        if au_names(self.aus) != self.aus:
            raise OmniferError(
                f"AU vocabulary {list(self.aus)} must be AU<n> names sorted by number, "
                f"e.g. {list(au_names(self.aus))}"
            )
        expected = columns_for(self.aus)
        if list(self.table.columns) != expected:
            raise OmniferError(
                f"sample table has columns {list(self.table.columns)}; expected {expected}"
            )
        if str(self.table["expression"].dtype) != "Int16":
            raise OmniferError(
                f"sample table column 'expression' has dtype {self.table['expression'].dtype}; "
                "expected nullable Int16"
            )
        missing_sources = set(self.table["source"].unique()) - set(self.sources)
        if missing_sources:
            object.__setattr__(
                self, "sources", self.sources + tuple(sorted(map(str, missing_sources)))
            )

    # ------------------------------------------------------------------ basics

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        return (
            f"LabeledSet({len(self)} samples, sources={list(self.sources)}, "
            f"expressions={len(self.expressions)}, aus={list(self.aus)}, bad={len(self.bad)})"
        )

    def subset(self, idx: Any) -> LabeledSet:
        """Rows ``idx`` (integer positions, a boolean mask or a slice), vocabularies kept."""
        if isinstance(idx, slice):
            rows = np.arange(len(self))[idx]
        else:
            rows = np.asarray(idx)
            if rows.dtype == bool:
                if rows.shape != (len(self),):
                    raise OmniferError(
                        f"boolean subset mask has shape {rows.shape}; expected ({len(self)},)"
                    )
                rows = np.flatnonzero(rows)
            elif rows.size and not np.issubdtype(rows.dtype, np.integer):
                raise OmniferError(
                    f"subset indices have dtype {rows.dtype}; pass integer positions or a "
                    "boolean mask"
                )
        table = self.table.iloc[rows.astype(np.int64).reshape(-1)].reset_index(drop=True)
        return dataclasses.replace(self, table=table)

    # ------------------------------------------------------------------ labels

    def masks(self) -> dict[str, np.ndarray]:
        """Which labels are present: ``expression`` [N], ``va`` [N], ``au`` [N, n_aus]."""
        t = self.table
        va = np.array(t["valence"].notna().to_numpy(bool) & t["arousal"].notna().to_numpy(bool))
        if self.aus:
            au = ~np.isnan(t[list(self.aus)].to_numpy(np.float32))
        else:
            au = np.zeros((len(t), 0), dtype=bool)
        return {"expression": np.array(t["expression"].notna().to_numpy(bool)), "va": va, "au": au}

    def arrays(self) -> dict[str, np.ndarray]:
        """Label values with missing entries filled by 0, and the masks that say which count.

        Keys: ``expression`` int64 [N], ``va`` float32 [N, 2], ``au`` float32 [N, n_aus],
        ``weight`` float32 [N], and ``expression_mask``, ``va_mask``, ``au_mask`` (bool).
        """
        t = self.table
        m = self.masks()
        expr = np.array(t["expression"].fillna(0).to_numpy(np.int64))
        va = np.array(t[["valence", "arousal"]].to_numpy(np.float32))
        va[~m["va"]] = 0.0
        if self.aus:
            au = np.array(t[list(self.aus)].to_numpy(np.float32))
            au[~m["au"]] = 0.0
        else:
            au = np.zeros((len(t), 0), dtype=np.float32)
        return {
            "expression": expr,
            "expression_mask": m["expression"],
            "va": va,
            "va_mask": m["va"],
            "au": au,
            "au_mask": m["au"],
            "weight": np.array(t["weight"].to_numpy(np.float32)),
        }

    def counts(self, *, per_au: bool = False) -> dict[str, dict[str, int]]:
        """Per source: ``samples``, samples carrying ``expression``/``va``/any ``au``, ``bad``.

        With ``per_au``, also one entry per AU name (samples carrying that AU).
        """
        m = self.masks()
        src = self.table["source"].to_numpy(dtype=object)
        out: dict[str, dict[str, int]] = {}
        for name in self.sources:
            sel = src == name
            row = {
                "samples": int(sel.sum()),
                "expression": int(m["expression"][sel].sum()),
                "va": int(m["va"][sel].sum()),
                "au": int(m["au"][sel].any(axis=1).sum()) if self.aus else 0,
                "bad": sum(1 for b in self.bad if b.source == name),
            }
            if per_au:
                for j, au in enumerate(self.aus):
                    row[au] = int(m["au"][sel, j].sum())
            out[name] = row
        return out

    # ------------------------------------------------------------------ Parquet

    def metadata(self) -> dict[str, Any]:
        """The vocabularies (and the dropped rows) as stored in the Parquet schema metadata."""
        return {
            "version": METADATA_VERSION,
            "expressions": list(self.expressions),
            "aus": list(self.aus),
            "sources": list(self.sources),
            "bad": [dataclasses.asdict(b) for b in self.bad],
        }

    def save(self, path: str | os.PathLike, *, extra: pd.DataFrame | None = None,
             root: str | os.PathLike | None = None) -> Path:
        """Write the table to Parquet (atomically), vocabularies in the schema metadata.

        ``extra`` columns (one row per sample) are stored after the sample-table ones, e.g. the
        provenance of mined samples; :meth:`load` ignores them. Image files under ``root`` (a
        workspace) are stored relative to the table's folder, so the folders can move together.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        from omnifer.artifacts import atomic_path

        path = Path(path)
        frame = self.table
        if root is not None:
            frame = frame.assign(image=[relative_image(ref, path.parent, Path(root))
                                        for ref in frame["image"]])
        if extra is not None:
            clash = sorted(set(extra.columns) & set(frame.columns))
            if clash or len(extra) != len(frame):
                raise OmniferError(
                    f"extra columns must be new names with one row per sample; got {clash or ''} "
                    f"{len(extra)} rows for {len(frame)} samples"
                )
            frame = pd.concat([frame, extra.reset_index(drop=True)], axis=1)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[METADATA_KEY] = json.dumps(self.metadata()).encode("utf-8")
        table = table.replace_schema_metadata(meta)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> LabeledSet:
        """Read a table written by :meth:`save`."""
        import pyarrow.parquet as pq

        path = Path(path)
        if not path.is_file():
            raise OmniferError(f"labeled-set file {path} does not exist; check the path")
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise OmniferError(
                f"cannot read {path} as Parquet ({one_line(exc)}); write it with "
                "LabeledSet.save"
            ) from None
        raw = (table.schema.metadata or {}).get(METADATA_KEY)
        if raw is None:
            raise OmniferError(
                f"{path} has no omnifer vocabularies in its Parquet metadata; it is not a "
                "saved LabeledSet (read a label manifest with read_labeled instead)"
            )
        meta = json.loads(raw.decode("utf-8"))
        if meta.get("version") != METADATA_VERSION:
            raise OmniferError(
                f"{path} has LabeledSet metadata version {meta.get('version')!r}; this omnifer "
                f"reads version {METADATA_VERSION}"
            )
        aus = tuple(meta["aus"])
        df = table.to_pandas()
        missing = [c for c in columns_for(aus) if c not in df.columns]
        if missing:
            raise OmniferError(f"{path} lacks the sample-table columns {missing}")
        base = path.parent.resolve()
        df = make_table(
            sample_id=df["sample_id"].tolist(),
            image=[ref if os.path.isabs(ref) or "::" in ref else os.path.normpath(base / ref)
                   for ref in df["image"]],
            source=df["source"].tolist(),
            expression=pd.array(df["expression"], dtype="Int16"),
            valence=df["valence"].to_numpy(np.float32), arousal=df["arousal"].to_numpy(np.float32),
            au={a: df[a].to_numpy(np.float32) for a in aus}, weight=df["weight"].to_numpy(np.float32),
        )
        return cls(
            table=df,
            expressions=tuple(meta["expressions"]),
            aus=aus,
            bad=tuple(BadFile(**b) for b in meta.get("bad", [])),
            sources=tuple(meta.get("sources", [])),
        )


def relative_image(ref: str, folder: Path, root: Path) -> str:
    """An image path as :meth:`LabeledSet.save` stores it: relative to ``folder`` when the
    file lies under ``root``, unchanged otherwise (other files, ``dir::row`` references)."""
    if "::" in ref or not os.path.isabs(ref):
        return ref
    resolved = Path(ref).resolve()
    if root.resolve() not in resolved.parents:
        return ref
    return os.path.relpath(resolved, folder.resolve())


def deduplicate(labeled: LabeledSet) -> LabeledSet:
    """``labeled`` with one row per sample id (the image's content): the first row of an image
    stays, later rows of it are dropped, and one warning line counts them (those with the same
    labels, and those whose labels differ from the kept row's, with an example)."""
    t = labeled.table
    codes, _ = pd.factorize(t["sample_id"])
    first = np.full(codes.max() + 1 if len(codes) else 0, len(t), dtype=np.int64)
    np.minimum.at(first, codes, np.arange(len(t)))
    repeat = first[codes] != np.arange(len(t))
    if not repeat.any():
        return labeled
    cols = ["expression", "valence", "arousal", *labeled.aus]
    a = t[cols]
    b = a.iloc[first[codes]].reset_index(drop=True)
    same = (a.eq(b).fillna(False) | (a.isna() & b.isna())).all(axis=1).to_numpy(bool)
    differ = np.flatnonzero(repeat & ~same)
    example = ""
    if len(differ):
        i = int(differ[0])
        example = (f"; e.g. {t['image'].iat[i]} repeats {t['image'].iat[first[codes[i]]]} with "
                   "another label")
    log.warning("%s: %d rows repeat an image read before and are dropped (%d with the same "
                "labels, %d with different labels: the first row's labels are kept)%s",
                ", ".join(labeled.sources), int(repeat.sum()), int(repeat.sum()) - len(differ),
                len(differ), example)
    return labeled.subset(~repeat)


def combine(sets: Sequence[LabeledSet]) -> LabeledSet:
    """One set from several: AU vocabularies united (absent AUs are NaN), sources kept."""
    sets = list(sets)
    if not sets:
        raise OmniferError("combine() got no labeled sets; pass at least one")
    for s in sets:
        if not isinstance(s, LabeledSet):
            raise OmniferError(f"combine() takes LabeledSet objects; got {type(s).__name__}")
    aus = au_names(a for s in sets for a in s.aus)
    has_contempt = any(len(s.expressions) > len(EXPRESSIONS) for s in sets)
    cols = columns_for(aus)
    frames = []
    for s in sets:
        t = s.table
        extra = {a: np.full(len(t), np.nan, dtype=np.float32) for a in aus if a not in s.aus}
        if extra:
            t = t.assign(**extra)
        frames.append(t[cols])
    non_empty = [f for f in frames if len(f)] or frames[:1]
    table = pd.concat(non_empty, ignore_index=True)
    # concat can widen dtypes when a frame is empty; pin them back.
    table = table.astype({"expression": "Int16", "valence": np.float32, "arousal": np.float32,
                          "weight": np.float32, **{a: np.float32 for a in aus}})
    sources: list[str] = []
    for s in sets:
        sources.extend(x for x in s.sources if x not in sources)
    return LabeledSet(
        table=table,
        expressions=expression_vocabulary(has_contempt),
        aus=aus,
        bad=tuple(b for s in sets for b in s.bad),
        sources=tuple(sources),
    )


__all__ = ["BadFile", "LabeledSet", "combine", "deduplicate", "METADATA_KEY"]
