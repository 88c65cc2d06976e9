"""Canonical label spaces and the mappings from each dataset's own label order.

Expressions are mapped by *name*, never by position: a dataset's integer labels are first
turned into that dataset's names, and names are turned into canonical indices through a table
of synonyms. AUs are named ``AU<n>``. Valence and arousal lie in [-1, 1].
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from omnifer.errors import OmniferError

#: Canonical expression order (contempt is optional and appended when a dataset has it).
EXPRESSIONS: tuple[str, ...] = (
    "neutral",
    "anger",
    "disgust",
    "fear",
    "happiness",
    "sadness",
    "surprise",
)
EXPRESSIONS_WITH_CONTEMPT: tuple[str, ...] = EXPRESSIONS + ("contempt",)

#: Spellings seen across FER datasets, all mapped to a canonical name.
SYNONYMS: dict[str, str] = {
    "neutral": "neutral",
    "neutrality": "neutral",
    "anger": "anger",
    "angry": "anger",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "happiness": "happiness",
    "happy": "happiness",
    "joy": "happiness",
    "sadness": "sadness",
    "sad": "sadness",
    "surprise": "surprise",
    "surprised": "surprise",
    "contempt": "contempt",
}

#: Each dataset's own integer label -> name. Labels outside these tables (AffectNet's
#: "none/uncertain/non-face", Aff-Wild2's "other" and -1) are not expressions of the
#: canonical space and are treated as missing by :func:`expression_index`.
DATASET_ORDERS: dict[str, dict[int, str]] = {
    "canonical": dict(enumerate(EXPRESSIONS_WITH_CONTEMPT)),
    "affectnet": dict(
        enumerate(["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt"])
    ),
    "fer2013": dict(enumerate(["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"])),
    # RAF-DB basic emotions are numbered from 1.
    "rafdb": {
        1: "surprise",
        2: "fear",
        3: "disgust",
        4: "happiness",
        5: "sadness",
        6: "anger",
        7: "neutral",
    },
    "expw": dict(enumerate(["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"])),
    "affwild2": dict(
        enumerate(["neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise"])
    ),
}

#: Labels that mean "no expression label" in a dataset's own order.
NOT_AN_EXPRESSION: dict[str, frozenset[int]] = {
    "affectnet": frozenset({8, 9, 10}),  # none, uncertain, non-face
    "affwild2": frozenset({-1, 7}),  # unannotated, other
}

#: FACS action units with a short description (the subset FER datasets annotate).
AU_DESCRIPTIONS: dict[str, str] = {
    "AU1": "inner brow raiser",
    "AU2": "outer brow raiser",
    "AU4": "brow lowerer",
    "AU5": "upper lid raiser",
    "AU6": "cheek raiser",
    "AU7": "lid tightener",
    "AU9": "nose wrinkler",
    "AU10": "upper lip raiser",
    "AU12": "lip corner puller",
    "AU14": "dimpler",
    "AU15": "lip corner depressor",
    "AU17": "chin raiser",
    "AU20": "lip stretcher",
    "AU23": "lip tightener",
    "AU24": "lip pressor",
    "AU25": "lips part",
    "AU26": "jaw drop",
    "AU27": "mouth stretch",
    "AU43": "eyes closed",
}

#: Valence/arousal range.
VA_RANGE: tuple[float, float] = (-1.0, 1.0)

TASKS: tuple[str, ...] = ("expression", "va", "au")

_AU_RE = re.compile(r"^\s*au\s*0*(\d+)\s*$", re.IGNORECASE)


def canonical_expression(name: str, *, classes: Sequence[str] = EXPRESSIONS) -> str:
    """Map a spelling such as ``"Happy"`` to its canonical name, or raise a clear error."""
    key = str(name).strip().lower()
    canon = SYNONYMS.get(key)
    if canon is None or canon not in classes:
        raise OmniferError(
            f"unknown expression label {name!r}; known labels are {', '.join(classes)} "
            f"(synonyms such as 'happy', 'angry', 'sad' are accepted)"
        )
    return canon


def expression_index(
    label: object, *, order: str | Mapping[int, str] | None = None,
    classes: Sequence[str] = EXPRESSIONS,
) -> int | None:
    """Canonical index of a dataset label, by name.

    ``label`` is either a name (mapped through the synonyms) or an integer in the dataset's
    own ``order`` (a key of :data:`DATASET_ORDERS` or an explicit mapping). Returns ``None``
    for labels that the dataset defines as "not an expression" (AffectNet's none/uncertain,
    Aff-Wild2's other/-1).
    """
    if isinstance(label, str) and not _is_int_string(label):
        return list(classes).index(canonical_expression(label, classes=classes))
    value = int(label)  # type: ignore[arg-type]
    if order is None:
        raise OmniferError(
            f"integer expression label {value} needs a label order; set label_order to one of "
            f"{', '.join(DATASET_ORDERS)} or use expression names"
        )
    table = dataset_order(order)
    if isinstance(order, str) and value in NOT_AN_EXPRESSION.get(order.lower(), ()):
        return None
    if value not in table:
        raise OmniferError(
            f"expression label {value} is not in the label order "
            f"{order if isinstance(order, str) else 'given'} (valid: {sorted(table)})"
        )
    return list(classes).index(canonical_expression(table[value], classes=classes))


def dataset_order(order: str | Mapping[int, str]) -> dict[int, str]:
    """Resolve a label order by dataset name (case-insensitive) or pass a mapping through."""
    if isinstance(order, Mapping):
        return {int(k): str(v) for k, v in order.items()}
    key = order.strip().lower().replace("-", "").replace("_", "")
    aliases = {"raf": "rafdb", "affwild": "affwild2", "abaw": "affwild2", "fer": "fer2013"}
    key = aliases.get(key, key)
    if key not in DATASET_ORDERS:
        raise OmniferError(
            f"unknown label order {order!r}; known orders are {', '.join(DATASET_ORDERS)}"
        )
    return DATASET_ORDERS[key]


def au_name(name: object) -> str:
    """Normalise ``"au12"``, ``"AU 12"``, ``12`` to ``"AU12"``; raise on anything else."""
    text = f"AU{name}" if isinstance(name, int) else str(name)
    match = _AU_RE.match(text)
    if not match:
        raise OmniferError(
            f"{name!r} is not an action-unit name; use the form AU<number>, e.g. AU12"
        )
    return f"AU{int(match.group(1))}"


def au_names(names: Iterable[object]) -> tuple[str, ...]:
    """Normalise a list of AU names, sorted by AU number, without duplicates."""
    out = {au_name(n) for n in names}
    return tuple(sorted(out, key=lambda n: int(n[2:])))


def check_va(value: float, *, what: str = "valence/arousal") -> float:
    """Return ``value`` if it lies in [-1, 1], else raise a clear error."""
    v = float(value)
    lo, hi = VA_RANGE
    if not lo <= v <= hi:
        raise OmniferError(f"{what} {v} is outside [{lo}, {hi}]; rescale it to [-1, 1]")
    return v


def _is_int_string(text: str) -> bool:
    return bool(re.fullmatch(r"\s*-?\d+\s*", text))
